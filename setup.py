"""Refresh Twisted's plugin cache after install so ``twistd rubrisproxy`` is found at once."""

from setuptools import setup

setup()
