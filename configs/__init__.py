"""The shipped YAML configs, installed as package data (``propensity.configs``).

This file only makes the folder a package so ``importlib.resources`` finds it in an editable
install as well as a wheel; every config itself is YAML, read by
:mod:`propensity.pipelines.shipped`.
"""
