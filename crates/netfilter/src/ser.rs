//! How the policy crate's types are written in plans' JSON (`serialize_with` helpers): a
//! policy name, protocol and state as their strings (`"web"`, `"tcp"`, `"filtered"`), a port
//! range as `"80"` or `"1-100"`. A leaf module, so every serializable type of the crate can use
//! them without depending on [`crate::plan`].

use std::sync::Arc;

use portwarden_policy::{PortRange, Protocol, State};
use serde::Serializer;

pub(crate) fn ser_str<S: Serializer>(p: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p)
}

pub(crate) fn ser_protocol<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

pub(crate) fn ser_state<S: Serializer>(p: &State, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

pub(crate) fn ser_range<S: Serializer>(p: &PortRange, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}
