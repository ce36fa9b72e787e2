//! Guest fetch (in progress)
