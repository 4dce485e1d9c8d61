//! The fleet: the `cvdmirror-fleet` library against a real `redis-server`
//! (`library`), and `cvdmirror serve --fleet` processes on their own
//! loopback addresses and roots sharing one Redis (`cluster`): membership,
//! redirects, the upstream lease and Redis failures (`nodes`), shared
//! quotas (`quotas`), and what the beacon announces while a node lags, as
//! a real freshclam in DNS mode sees it (`beacon`).

// Tests panic on purpose and measure real elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

mod fleet {
    mod beacon;
    mod cluster;
    mod library;
    mod node;
    mod nodes;
    mod quotas;
}
