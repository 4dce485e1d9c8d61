//! Scheduler behaviour tests.
