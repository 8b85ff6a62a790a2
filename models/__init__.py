"""Agent architectures, training, TorchScript compilation and signed-by-hash bundles."""
