"""Build-time half of gcf-trt: needs torch.  Model definition, ONNX export, precision, engines."""
