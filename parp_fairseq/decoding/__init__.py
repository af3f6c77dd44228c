"""CTC decoding and scoring."""
