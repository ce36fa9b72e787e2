//! Floating-point unit (filled in by the FPU work).
