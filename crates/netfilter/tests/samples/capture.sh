#!/bin/sh
# Regenerates the iptables-save samples used by the parser's unit tests. Runs everything inside
# a throw-away network namespace (never in the root namespace). Needs root and both backends.
set -eu
NS=pw-nfsample-x-$$
ip netns add "$NS"
trap 'ip netns delete "$NS"' EXIT
for B in nft legacy; do
  for F in v4 v6; do
    X="ip netns exec $NS iptables-$B -w"; N=10.0.0.0/8; M=172.17.0.0/16
    if [ "$F" = v6 ]; then X="ip netns exec $NS ip6tables-$B -w"; N=fd00::/8; M=fd17::/64; fi
    $X -N DOCKER; $X -N DOCKER-USER; $X -A DOCKER-USER -j RETURN
    $X -A FORWARD -j DOCKER-USER
    $X -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    $X -t nat -N DOCKER; $X -t nat -A POSTROUTING -s $M ! -o docker0 -j MASQUERADE
    $X -N KUBE-SERVICES
    $X -A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
    $X -A INPUT -p tcp -m multiport --dports 80,443,8000:8100 -m comment --comment 'x "quoted"' -j DROP
    $X -A INPUT -s $N -p udp --dport 53 -j ACCEPT
    $X -A INPUT -i lo -j ACCEPT
    ip netns exec "$NS" sh -c "$(echo "$X" | sed 's/.*exec [^ ]* //;s/ -w$//')-save -c" > "foreign-$B-$F.save"
    # leave the namespace clean for the next backend/family
    S="$(echo "$X" | sed 's/ -w$//')"
    for t in filter nat; do $S -t $t -F; $S -t $t -X; done
  done
done
