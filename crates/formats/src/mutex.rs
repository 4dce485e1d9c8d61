//! The one way this project takes a lock: a panic while another thread held
//! the mutex leaves the data as it was (every critical section here keeps
//! its data consistent at each step), so the poison is ignored rather than
//! spread to every later request.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard if a panicking holder poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
