//! fdt (in progress)
