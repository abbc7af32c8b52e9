"""The localsb command line: argparse tree (main.py), rendering (output.py), handlers (commands/)."""
