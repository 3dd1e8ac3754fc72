"""Build of the native core, _cmultiprocessing, from Modules/.

Every .c file under Modules/ is compiled; the platform layer's files that do
not apply to the target compile to nothing.  Warnings are errors when
CMP_WERROR=1 is set in the environment (CI sets it).
"""
import glob
import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def sources():
    found = sorted(glob.glob(os.path.join("Modules", "*.c")))
    found += sorted(glob.glob(os.path.join("Modules", "platform", "*.c")))
    return found


def compile_args():
    if sys.platform == "win32":
        return ["/W3"]
    args = ["-Wall", "-Wextra",
            "-std=c11", "-D_GNU_SOURCE", "-fvisibility=hidden"]
    if os.environ.get("CMP_WERROR") == "1":
        args.append("-Werror")
    if os.environ.get("CMP_SANITIZE"):
        args += ["-fsanitize=" + os.environ["CMP_SANITIZE"],
                 "-fno-omit-frame-pointer", "-O1", "-g"]
    return args


def link_args():
    if sys.platform == "win32":
        return []
    args = []
    if os.environ.get("CMP_SANITIZE"):
        args.append("-fsanitize=" + os.environ["CMP_SANITIZE"])
    return args


def libraries():
    if sys.platform.startswith("linux"):
        return ["rt", "pthread"]
    if sys.platform == "win32":
        return ["ws2_32", "advapi32"]
    return []


setup(
    ext_modules=[
        Extension(
            "_cmultiprocessing",
            sources=sources(),
            include_dirs=["Modules"],
            extra_compile_args=compile_args(),
            extra_link_args=link_args(),
            libraries=libraries(),
        )
    ],
)
