"""Build of the native core, _cmultiprocessing, from Modules/.

Every .c file under Modules/ is compiled; the platform layer's files that do
not apply to the target compile to nothing.  Warnings are errors when
CMP_WERROR=1 is set in the environment (CI sets it).

The same build makes the child launcher, Modules/launcher/ (a program, not
a module: see launcher.h), with the same compiler and this Python's
headers, and puts it in the package as cmultiprocessing/_cmp_launcher
(.exe on Windows), so that it is in every wheel.
"""
import glob
import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

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
        return ["rt", "pthread", "dl"]
    if sys.platform == "win32":
        return ["ws2_32", "advapi32"]
    return []


LAUNCHER = "_cmp_launcher"


def launcher_libraries():
    # dlopen() is in libc from glibc 2.34 on; older ones need libdl.
    return ["dl"] if sys.platform.startswith("linux") else []


class BuildWithLauncher(build_ext):
    """build_ext, then the launcher program next to the package's modules."""

    def run(self):
        super().run()
        self.build_launcher()

    def launcher_dir(self):
        if self.inplace:
            return os.path.join(HERE, "Lib", "cmultiprocessing")
        return os.path.join(self.build_lib, "cmultiprocessing")

    def launcher_file(self):
        return os.path.join(self.launcher_dir(),
                            self.compiler.executable_filename(LAUNCHER))

    def build_launcher(self):
        sources = sorted(glob.glob(os.path.join("Modules", "launcher", "*.c")))
        if not sources:
            raise RuntimeError("no launcher sources in Modules/launcher/")
        args = [a for a in compile_args() if not a.startswith(
            ("-fvisibility", "-fsanitize", "-O1", "-g", "-fno-omit"))]
        objects = self.compiler.compile(
            sources, output_dir=os.path.join(self.build_temp, "launcher"),
            include_dirs=self.include_dirs, extra_postargs=args,
            debug=self.debug)
        os.makedirs(self.launcher_dir(), exist_ok=True)
        self.compiler.link_executable(
            objects, LAUNCHER, output_dir=self.launcher_dir(),
            libraries=launcher_libraries(),
            library_dirs=self.library_dirs, debug=self.debug)

    def get_outputs(self):
        return super().get_outputs() + [self.launcher_file()]


# The start-up hook of the alias: site runs this line in every interpreter
# that starts with this site-packages (children and sub-interpreters
# included); it costs one dictionary look-up unless CMULTIPROCESSING_ALIAS
# is set, and then installs only the finder (nothing of the package is
# imported before the program imports multiprocessing).
ALIAS_PTH = "cmultiprocessing-alias.pth"
ALIAS_PTH_LINE = (
    "import os; os.environ.get('CMULTIPROCESSING_ALIAS', '') not in "
    "('', '0') and __import__('_cmultiprocessing_alias')"
    ".install_from_environment()\n")


class BuildWithAliasHook(build_py):
    """build_py, then the .pth hook at the top of the build (so that the
    wheel puts it in site-packages itself)."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, ALIAS_PTH)
        with open(target, "w", encoding="utf-8") as f:
            f.write(ALIAS_PTH_LINE)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, ALIAS_PTH)]


# The packages under Lib/: the ones found there, plus the PEP 561 stub-only
# package of the extension module (_cmultiprocessing is a top-level module,
# whose stub a type checker finds only as _cmultiprocessing-stubs; the name
# is not an identifier, so find_packages() skips it), with their data files.
# (Here rather than in pyproject.toml: the setuptools of 3.11 and Debian
# (65, 66) refuse that name as a package-data key there.)
PACKAGES = find_packages("Lib") + ["_cmultiprocessing-stubs"]
PACKAGE_DATA = {
    "cmultiprocessing": ["py.typed"],
    "_cmultiprocessing-stubs": ["__init__.pyi"],
}


setup(
    packages=PACKAGES,
    package_data=PACKAGE_DATA,
    cmdclass={"build_ext": BuildWithLauncher, "build_py": BuildWithAliasHook},
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
