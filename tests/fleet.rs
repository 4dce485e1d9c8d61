//! The fleet: the `cvdmirror-fleet` library against a real `redis-server`
//! (`library`), and `cvdmirror serve --fleet` processes on their own
//! loopback addresses and roots sharing one Redis (`nodes`).

// Tests panic on purpose and measure real elapsed time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

mod fleet {
    mod library;
    mod node;
    mod nodes;
    mod quotas;
}
