"""python -m cmultiprocessing SCRIPT [ARGS...]
python -m cmultiprocessing -m MODULE [ARGS...]

Run a program with the alias installed (see cmultiprocessing.install()):
its `import multiprocessing` -- and concurrent.futures' -- gets
cmultiprocessing.  The environment variable CMULTIPROCESSING_ALIAS=1 is set
too, so that the Python programs it starts (children, sub-interpreters, a
test runner's workers) get the alias from their first line, through the
start-up hook the package installs in site-packages.  The program runs as
`python SCRIPT` or `python -m MODULE` would run it: as __main__, with
sys.argv[0] its path and the rest of the arguments after it.
"""
import os
import sys

__all__ = ['main']

USAGE = __doc__.split('\n\n')[0]


def _fresh_main():
    """A new, empty __main__ for the program (this module keeps its own)."""
    import builtins
    import types
    main = types.ModuleType('__main__')
    main.__builtins__ = builtins
    sys.modules['__main__'] = sys.modules['__mp_main__'] = main
    return main


def run_module(name, args):
    import runpy
    sys.argv[:] = [name] + args
    _fresh_main()
    # What `python -m` itself runs: the module's code in __main__, with
    # sys.argv[0] set to its file.
    runpy._run_module_as_main(name, alter_argv=True)


def run_script(path, args):
    sys.argv[:] = [path] + args
    if os.path.isdir(path) or not path.endswith('.py') and \
            os.path.isfile(path) and _is_zip(path):
        import runpy
        sys.path[0] = path
        runpy.run_path(path, run_name='__main__')
        return
    import io
    from importlib.machinery import SourceFileLoader
    with io.open_code(path) as f:
        source = f.read()
    sys.path[0] = os.path.dirname(os.path.abspath(path))
    main = _fresh_main()
    main.__file__ = path
    main.__cached__ = None
    main.__spec__ = None
    main.__loader__ = SourceFileLoader('__main__', path)
    code = compile(source, path, 'exec', dont_inherit=True)
    exec(code, main.__dict__)


def _is_zip(path):
    import zipfile
    return zipfile.is_zipfile(path)


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ('-h', '--help'):
        print(USAGE)
        return 0 if args else 2
    if args[0] == '-m' and len(args) < 2:
        sys.stderr.write('python -m cmultiprocessing: -m needs a module '
                         'name\n%s\n' % USAGE)
        return 2
    import _cmultiprocessing_alias
    import cmultiprocessing
    cmultiprocessing.install()
    os.environ[_cmultiprocessing_alias.ENV_VAR] = '1'
    if args[0] == '-m':
        run_module(args[1], args[2:])
    else:
        if not os.path.exists(args[0]):
            sys.stderr.write("python -m cmultiprocessing: can't open file "
                             "%r: no such file\n" % (args[0],))
            return 2
        run_script(args[0], args[1:])
    return 0


if __name__ == '__main__':
    sys.exit(main())
