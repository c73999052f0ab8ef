"""MM-Rec language model built on mmrec_ops."""
