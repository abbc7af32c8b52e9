import glob

from setuptools import setup

# Man pages are generated from the argparse tree (scripts/gen-man) and committed; the wheel and sdist
# carry them all, and a wheel install places them in <prefix>/share/man/man1, which man searches when
# <prefix>/bin is on PATH. An editable install places no data_files: scripts/setup runs
# scripts/install-man instead.
setup(data_files=[("share/man/man1", sorted(glob.glob("man/*.1")))])
