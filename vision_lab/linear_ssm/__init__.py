"""The linear_ssm family's technique modules (generated from nbs/linear_ssm/)."""
