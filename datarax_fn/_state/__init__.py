"""The state contract: the generic functions every source implements, its cursors, argument checks, the keyed shuffle and jit donation."""
