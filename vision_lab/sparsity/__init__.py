"""The sparsity family's technique modules (generated from nbs/sparsity/)."""
