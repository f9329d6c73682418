//! Summary statistics of repeated runs and the log-log least-squares fit behind every scaling
//! exponent in the report. Pure functions; no I/O.

/// The median of `values` (the mean of the two middle values for an even count); `None` when
/// empty. NaNs sort last and so never become the median of a mostly finite sample.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Smallest and largest value; `None` when empty.
pub fn min_max(values: &[f64]) -> Option<(f64, f64)> {
    let mut it = values.iter().copied();
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

/// A power law `y = c * x^exponent` fitted by least squares on `ln y` against `ln x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerFit {
    /// The exponent: 1 means linear growth, 2 quadratic, below 1 sublinear.
    pub exponent: f64,
    /// The factor `c` (the fitted `y` at `x = 1`).
    pub factor: f64,
    /// Coefficient of determination of the log-log fit (1 = every point on the line).
    pub r_squared: f64,
    /// Number of points fitted.
    pub points: usize,
}

impl PowerFit {
    /// The fitted `y` at `x`.
    pub fn predict(&self, x: f64) -> f64 {
        self.factor * x.powf(self.exponent)
    }
}

/// Fits `y = c * x^k` to the points with positive `x` and `y`. `None` when fewer than two such
/// points have distinct `x`.
pub fn power_fit(points: &[(f64, f64)]) -> Option<PowerFit> {
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    let n = logs.len() as f64;
    if logs.len() < 2 {
        return None;
    }
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = logs.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = logs.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = logs.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let k = sxy / sxx;
    let b = my - k * mx;
    let ss_res: f64 = logs.iter().map(|p| (p.1 - (b + k * p.0)).powi(2)).sum();
    let r_squared = if syy <= f64::EPSILON {
        1.0
    } else {
        1.0 - ss_res / syy
    };
    Some(PowerFit {
        exponent: k,
        factor: b.exp(),
        r_squared,
        points: logs.len(),
    })
}

/// The exponent between each pair of neighbouring points (sorted by `x`): where the growth
/// changes, the curve has a knee.
pub fn local_exponents(points: &[(f64, f64)]) -> Vec<f64> {
    let mut p: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    p.windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].1 / w[0].1).ln() / (w[1].0 / w[0].0).ln())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn min_max_of_a_sample() {
        assert_eq!(min_max(&[2.0, 5.0, 1.0]), Some((1.0, 5.0)));
        assert_eq!(min_max(&[]), None);
    }

    #[test]
    fn power_fit_recovers_exact_power_laws() {
        for k in [0.5, 1.0, 2.0] {
            let pts: Vec<(f64, f64)> = [1e3, 1e4, 5e4]
                .iter()
                .map(|&x: &f64| (x, 3.0 * x.powf(k)))
                .collect();
            let f = power_fit(&pts).expect("fit");
            assert!((f.exponent - k).abs() < 1e-9, "{f:?}");
            assert!((f.factor - 3.0).abs() < 1e-6, "{f:?}");
            assert!((f.r_squared - 1.0).abs() < 1e-9, "{f:?}");
            assert!((f.predict(2e4) - 3.0 * 2e4_f64.powf(k)).abs() < 1e-3 * 2e4_f64.powf(k));
        }
    }

    #[test]
    fn power_fit_of_noisy_points_has_r_squared_below_one() {
        let f = power_fit(&[(1.0, 1.0), (2.0, 2.5), (4.0, 3.5), (8.0, 9.0)]).expect("fit");
        assert!(f.exponent > 0.8 && f.exponent < 1.2, "{f:?}");
        assert!(f.r_squared < 1.0 && f.r_squared > 0.8, "{f:?}");
    }

    #[test]
    fn power_fit_needs_two_distinct_positive_points() {
        assert_eq!(power_fit(&[(1.0, 1.0)]), None);
        assert_eq!(power_fit(&[(2.0, 1.0), (2.0, 3.0)]), None);
        assert_eq!(power_fit(&[(0.0, 1.0), (-1.0, 3.0), (5.0, 0.0)]), None);
    }

    #[test]
    fn local_exponents_show_a_knee() {
        // flat, then linear
        let e = local_exponents(&[(4.0, 1.0), (1.0, 1.0), (2.0, 1.0), (8.0, 2.0)]);
        assert_eq!(e.len(), 3);
        assert!(e[0].abs() < 1e-12 && e[1].abs() < 1e-12);
        assert!((e[2] - 1.0).abs() < 1e-12);
    }
}
