//! Instruction decoder (filled in by the decoder work).
