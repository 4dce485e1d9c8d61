//! `PKCS7_verify` over detached content that OpenSSL reads itself, in
//! small chunks, from a file or a borrowed slice — with no output buffer.
//!
//! The `openssl` crate's `Pkcs7::verify` always hands OpenSSL a memory BIO
//! for the verified content, and OpenSSL copies the whole content into it:
//! for a 160 MB `main.cvd`, 160 MB of heap (and more while it grows) that
//! nobody reads. ClamAV passes an output too; the verdict does not depend
//! on it. Here the output is NULL, which OpenSSL documents as "content
//! read and discarded", and a file is read through a file BIO, so checking
//! a CVD's `.sign` costs a few kilobytes whatever its size.
//!
//! The second place in cvdmirror with `unsafe` (the first is
//! `server::pacing`): OpenSSL calls the safe bindings do not offer.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::raw::{c_int, c_long, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;

use foreign_types::ForeignTypeRef;
use openssl::error::ErrorStack;
use openssl::pkcs7::{Pkcs7Flags, Pkcs7Ref};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreRef;

/// `bio.h`: `BIO_read_filename(b, name)` is
/// `BIO_ctrl(b, BIO_C_SET_FILENAME, BIO_CLOSE | BIO_FP_READ, name)`.
const BIO_C_SET_FILENAME: c_int = 108;
const BIO_CLOSE: c_long = 0x01;
const BIO_FP_READ: c_long = 0x02;

/// Where the signed content comes from.
pub enum Content<'a> {
    /// Bytes in memory (read in place, not copied).
    Bytes(&'a [u8]),
    /// A file, read from disk as OpenSSL verifies.
    File(&'a Path),
}

/// An owned `BIO*`, freed on drop.
struct Bio(*mut openssl_sys::BIO);

impl Drop for Bio {
    fn drop(&mut self) {
        // SAFETY: the pointer came from BIO_new*/non-null and is freed once.
        unsafe { openssl_sys::BIO_free_all(self.0) };
    }
}

impl Bio {
    fn open(content: &Content<'_>) -> Result<Bio, ErrorStack> {
        openssl_sys::init();
        match content {
            Content::Bytes(bytes) => {
                let len = c_int::try_from(bytes.len()).map_err(|_| ErrorStack::get())?;
                // SAFETY: a read-only memory BIO over `bytes`, which outlive
                // it (the BIO is dropped before `verify` returns).
                let bio = unsafe { openssl_sys::BIO_new_mem_buf(bytes.as_ptr().cast(), len) };
                Self::checked(bio)
            }
            Content::File(path) => {
                let name =
                    CString::new(path.as_os_str().as_bytes()).map_err(|_| ErrorStack::get())?;
                // SAFETY: a new file BIO; `name` is NUL-terminated and lives
                // across the call (OpenSSL opens the file and keeps the FILE).
                let bio =
                    Self::checked(unsafe { openssl_sys::BIO_new(openssl_sys::BIO_s_file()) })?;
                let opened = unsafe {
                    openssl_sys::BIO_ctrl(
                        bio.0,
                        BIO_C_SET_FILENAME,
                        BIO_CLOSE | BIO_FP_READ,
                        name.as_ptr() as *mut c_void,
                    )
                };
                if opened <= 0 {
                    return Err(ErrorStack::get());
                }
                Ok(bio)
            }
        }
    }

    fn checked(bio: *mut openssl_sys::BIO) -> Result<Bio, ErrorStack> {
        if bio.is_null() {
            Err(ErrorStack::get())
        } else {
            Ok(Bio(bio))
        }
    }
}

/// `PKCS7_verify(p7, no extra certs, store, content, NULL, flags)`.
pub fn verify(
    pkcs7: &Pkcs7Ref,
    store: &X509StoreRef,
    content: Content<'_>,
    flags: Pkcs7Flags,
) -> Result<(), ErrorStack> {
    let certs = Stack::<X509>::new()?;
    let bio = Bio::open(&content)?;
    // SAFETY: every pointer is valid for the call: the PKCS#7, the empty
    // stack and the store are borrowed, the BIO is owned; a NULL output
    // BIO makes OpenSSL read the content and discard it.
    let result = unsafe {
        openssl_sys::PKCS7_verify(
            pkcs7.as_ptr(),
            certs.as_ptr(),
            store.as_ptr(),
            bio.0,
            ptr::null_mut(),
            flags.bits(),
        )
    };
    if result > 0 {
        Ok(())
    } else {
        Err(ErrorStack::get())
    }
}
