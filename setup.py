import glob

from setuptools import setup

# Man pages are generated from the argparse tree (scripts/gen-man) and committed; install them all.
setup(data_files=[("share/man/man1", sorted(glob.glob("man/*.1")))])
