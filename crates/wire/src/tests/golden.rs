//! Golden frames captured from real clients (filled in below).
