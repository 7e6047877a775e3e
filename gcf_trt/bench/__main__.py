"""``python -m gcf_trt.bench ARGS`` = ``gcf-trt bench ARGS``."""
import sys

from gcf_trt.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
