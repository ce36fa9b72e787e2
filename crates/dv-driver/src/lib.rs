//! DV-driver (in progress)
