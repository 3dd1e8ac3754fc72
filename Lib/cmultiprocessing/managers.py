"""Managers: a server process that owns objects, and proxies to them.

The API and the wire protocol are the stdlib's `multiprocessing.managers`
(requests are ``(ident, methodname, args, kwds)`` tuples, replies are
``(kind, payload)`` with kind one of '#RETURN', '#ERROR', '#TRACEBACK',
'#UNSERIALIZABLE', '#PROXY'), so a proxy of this package can talk to a
stdlib manager and back.  The code is organised differently:

* `Server` answers a proxy's request through `_answer()`, which returns
  the reply instead of sending it, so that every failure path ends in one
  place; a referent is disposed of outside the server's mutex.
* Forwarding methods of proxies are made by closures (`_forwarder`), not by
  exec'ing source text.
* A proxy whose manager has gone away raises an EOFError that names the
  manager's address, and the next call reconnects (and fails fast with a
  ConnectionRefusedError while the manager stays down); nothing hangs.
* `BaseManager.start()` re-raises in the caller the error that stopped the
  server process from starting (an address in use, a failing initializer),
  instead of an anonymous EOFError.
"""

import array
import collections.abc
import contextlib
import os
import queue
import signal
import sys
import threading
import time
import types
from traceback import format_exc

from . import connection
from . import pool
from . import process
from . import reduction
from . import util
from .context import ProcessError, get_spawning_popen

try:
    from . import shared_memory
except ImportError:
    HAS_SHMEM = False
else:
    HAS_SHMEM = True

__all__ = ['BaseManager', 'SyncManager', 'BaseProxy', 'Token']
if HAS_SHMEM:
    __all__.append('SharedMemoryManager')

_PY313 = sys.version_info >= (3, 13)
# 3.14: SyncManager.set, locked() on lock proxies, more list/dict methods,
# and the list/dict/set proxies registered with collections.abc
_PY314 = sys.version_info >= (3, 14)


# ---------------------------------------------------------------------------
# Pickling of the types managed objects commonly return
# ---------------------------------------------------------------------------

def _rebuild_array(typecode, payload):
    return array.array(typecode, payload)


def reduce_array(a):
    return _rebuild_array, (a.typecode, a.tobytes())


def rebuild_as_list(obj):
    return list, (list(obj),)


reduction.register(array.array, reduce_array)
for _view in ({}.keys(), {}.values(), {}.items()):
    reduction.register(type(_view), rebuild_as_list)
del _view


# ---------------------------------------------------------------------------
# Tokens, errors, one-shot requests
# ---------------------------------------------------------------------------

class Token(object):
    """Names a shared object: its type id, its server's address, its id."""
    __slots__ = ('typeid', 'address', 'id')

    def __init__(self, typeid, address, id):
        self.typeid = typeid
        self.address = address
        self.id = id

    def __getstate__(self):
        return (self.typeid, self.address, self.id)

    def __setstate__(self, state):
        self.typeid, self.address, self.id = state

    def __repr__(self):
        return (f'{type(self).__name__}(typeid={self.typeid!r}, '
                f'address={self.address!r}, id={self.id!r})')


class RemoteError(Exception):
    """An error raised in the manager process, with its traceback text."""

    def __str__(self):
        rule = '-' * 75
        return f'\n{rule}\n{self.args[0]}{rule}'


def convert_to_error(kind, result):
    """The exception to raise for a reply that is not '#RETURN'."""
    if kind == '#ERROR':
        return result
    if kind not in ('#TRACEBACK', '#UNSERIALIZABLE'):
        return ValueError(f'Unrecognized message type {kind!r}')
    if not isinstance(result, str):
        raise TypeError(f"Result {result!r} (kind '{kind}') type is "
                        f"{type(result)}, not str")
    if kind == '#UNSERIALIZABLE':
        result = f'Unserializable message: {result}\n'
    return RemoteError(result)


# kwds={}: the stdlib's signature; never mutated here
def dispatch(c, id, methodname, args=(), kwds={}):  # noqa: B006
    """Send one request on connection *c* and return the answer."""
    c.send((id, methodname, args, kwds))
    reply = c.recv()
    if reply[0] == '#RETURN':
        return reply[1]
    error, reply = convert_to_error(*reply), None
    try:
        raise error
    finally:
        error = None        # no cycle through this frame


# kwds={}: never mutated, as in dispatch()
def _call_server(Client, address, authkey, methodname, args=(), kwds={}):  # noqa: B006
    """Open a connection to the server, make one request, close it."""
    conn = Client(address, authkey=authkey)
    try:
        return dispatch(conn, None, methodname, args, kwds)
    finally:
        conn.close()


def all_methods(obj):
    """Names of the callable attributes of *obj*."""
    return [name for name in dir(obj) if callable(getattr(obj, name))]


def public_methods(obj):
    """Names of the callable attributes of *obj* not starting with '_'."""
    return [name for name in all_methods(obj) if name[0] != '_']


# ---------------------------------------------------------------------------
# Transports
# ---------------------------------------------------------------------------

class _Transports(dict):
    """serializer name -> (Listener, Client), looked up on first use."""

    _names = {'pickle': ('Listener', 'Client'),
              'xmlrpclib': ('XmlListener', 'XmlClient')}

    def __missing__(self, serializer):
        listener_name, client_name = self._names[serializer]
        pair = (getattr(connection, listener_name),
                getattr(connection, client_name))
        self[serializer] = pair
        return pair


listener_client = _Transports()


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------

_NO_REPLY = object()    # a server function that answered by itself


def _reply(conn, reply, fallback_kind, request):
    """Send *reply*; when it cannot be sent, send *fallback_kind* with the
    traceback of why instead.  False when nothing could be sent."""
    for attempt in (0, 1):
        try:
            conn.send(reply if not attempt else (fallback_kind, format_exc()))
            return True
        except Exception as exc:
            if attempt:
                util.info('%s: cannot send a reply (%r) to request %r: %r',
                          threading.current_thread().name, reply, request,
                          exc)
    return False


class Server(object):
    """Owns the shared objects and serves the proxies' requests; runs in
    the manager's process (or wherever `serve_forever()` is called)."""

    public = ['shutdown', 'create', 'accept_connection', 'get_methods',
              'debug_info', 'number_of_objects', 'dummy', 'incref', 'decref']

    def __init__(self, registry, address, authkey, serializer):
        if not isinstance(authkey, bytes):
            raise TypeError(f"Authkey {authkey!r} is type "
                            f"{type(authkey)!s}, not bytes")
        self.registry = registry
        self.authkey = process.AuthenticationString(authkey)
        Listener = listener_client[serializer][0]
        # clients authenticate after accept(), in their own thread
        self.listener = Listener(address=address,
                                 backlog=128 if _PY313 else 16)
        self.address = self.listener.address
        self.id_to_obj = {'0': (None, ())}
        self.id_to_refcount = {}
        self.id_to_local_proxy_obj = {}
        self.mutex = threading.Lock()
        self.stop_event = threading.Event()

    # -- running ------------------------------------------------------------

    def serve_forever(self):
        """Serve until a 'shutdown' request, then exit the process."""
        process.current_process()._manager_server = self
        try:
            threading.Thread(target=self.accepter, daemon=True).start()
            try:
                # sliced, so that the main thread sees signals
                while not self.stop_event.wait(1.0):
                    pass
            except (KeyboardInterrupt, SystemExit):
                pass
        finally:
            if sys.stdout is not sys.__stdout__:
                util.debug('resetting stdout, stderr')
                sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            sys.exit(0)

    def accepter(self):
        while not self.stop_event.is_set():
            try:
                conn = self.listener.accept()
            except OSError:
                if getattr(self.listener, '_listener', True) is None:
                    return          # the listener was closed
                time.sleep(0.001)
                continue
            threading.Thread(target=self.handle_request, args=(conn,),
                             daemon=True).start()

    def handle_request(self, conn):
        """Serve one new connection: authenticate, run one server function
        (which may be 'accept_connection', serving it for good)."""
        with contextlib.closing(conn):
            try:
                self._handle_request(conn)
            except SystemExit:
                pass

    def _server_function(self, c):
        """Authenticate a new connection (both ways) and read which server
        function it asks for."""
        # both halves within connection.HANDSHAKE_TIMEOUT: a client that
        # stalls does not keep this thread for ever
        connection._authenticate_connection(c, self.authkey)
        request = c.recv()
        funcname = request[1]
        if funcname not in self.public:
            raise AssertionError(f'{funcname!r} unrecognized')
        return request, getattr(self, funcname)

    def _handle_request(self, c):
        request = None
        try:
            request, func = self._server_function(c)
            reply = ('#RETURN', func(c, *request[2], **request[3]))
        except Exception:
            reply = ('#TRACEBACK', format_exc())
        if reply[1] is not _NO_REPLY:
            _reply(c, reply, '#TRACEBACK', request)

    def serve_client(self, conn):
        """Answer the requests of the proxies of one thread of one process
        until it disconnects."""
        util.debug('starting server thread to service %r',
                   threading.current_thread().name)
        recv, send, answer = conn.recv, conn.send, self._answer
        stopping = self.stop_event.is_set
        objects = self.id_to_obj
        while not stopping():
            try:
                request = recv()
            except EOFError:
                util.debug('got EOF -- exiting thread serving %r',
                           threading.current_thread().name)
                return
            except Exception:
                reply = ('#TRACEBACK', format_exc())
            else:
                # the common case inline: an exposed method of a tracked
                # object that returns a plain value; the rest in _answer()
                try:
                    ident, methodname, args, kwds = request
                    obj, exposed, gettypeid = objects[ident]
                    plain = methodname in exposed and not (
                        gettypeid and methodname in gettypeid)
                except Exception:
                    plain = False
                if plain:
                    try:
                        method = getattr(obj, methodname)
                    except AttributeError:
                        reply = answer(conn, request)
                    else:
                        try:
                            reply = ('#RETURN', method(*args, **kwds))
                        except Exception as exc:
                            reply = ('#ERROR', exc)
                else:
                    reply = answer(conn, request)
                obj = method = args = kwds = None
            try:
                send(reply)
            except Exception:
                if not _reply(conn, reply, '#UNSERIALIZABLE', request):
                    conn.close()
                    return
            request = reply = None

    def _referent(self, ident):
        try:
            return self.id_to_obj[ident]
        except KeyError as missing:
            try:
                return self.id_to_local_proxy_obj[ident]
            except KeyError:
                raise missing from None

    def _answer(self, conn, request):
        """The reply to one proxy request."""
        methodname = obj = ident = None
        try:
            ident, methodname, args, kwds = request
            obj, exposed, gettypeid = self._referent(ident)
            if methodname not in exposed:
                raise AttributeError(
                    f'method {methodname!r} of {type(obj)!r} object is not '
                    f'in exposed={exposed!r}')
            function = getattr(obj, methodname)
        except AttributeError:
            if methodname is None:
                return ('#TRACEBACK', format_exc())
            return self._fall_back(conn, ident, obj, methodname, args, kwds)
        except Exception:
            return ('#TRACEBACK', format_exc())
        try:
            result = function(*args, **kwds)
        except Exception as exc:
            return ('#ERROR', exc)
        typeid = gettypeid.get(methodname) if gettypeid else None
        if not typeid:
            return ('#RETURN', result)
        try:
            rident, rexposed = self.create(conn, typeid, result)
        except Exception:
            return ('#TRACEBACK', format_exc())
        return ('#PROXY', (rexposed, Token(typeid, self.address, rident)))

    def _fall_back(self, conn, ident, obj, methodname, args, kwds):
        # what every referent answers even when not exposed
        try:
            handler = self.fallback_mapping[methodname]
            return ('#RETURN', handler(self, conn, ident, obj, *args, **kwds))
        except Exception:
            return ('#TRACEBACK', format_exc())

    # handler(server, conn, ident, referent) for requests every referent
    # answers, exposed or not
    fallback_mapping = {
        '#GETVALUE': lambda self, conn, ident, obj: obj,
        '__repr__': lambda self, conn, ident, obj: repr(obj),
        '__str__': lambda self, conn, ident, obj: str(obj),
    }
    fallback_getvalue = fallback_mapping['#GETVALUE']
    fallback_repr = fallback_mapping['__repr__']
    fallback_str = fallback_mapping['__str__']

    # -- server functions (the first argument is the connection) ------------

    def number_of_objects(self, c):
        """How many shared objects have references."""
        return len(self.id_to_refcount)

    def debug_info(self, c):
        """One entry per shared object: id, refcount, start of its str()."""
        def entry(ident):
            head = str(self.id_to_obj[ident][0])[:75]
            count = self.id_to_refcount[ident]
            return f'  {ident}:       refcount={count}\n    {head}'
        with self.mutex:
            idents = sorted(set(self.id_to_refcount) - {'0'})
            return '\n'.join(map(entry, idents))

    def dummy(self, c):
        """Does nothing: lets a client check that the server answers."""

    def shutdown(self, c):
        """Answer, then stop serving (serve_forever() exits)."""
        try:
            util.debug('manager received shutdown message')
            c.send(('#RETURN', None))
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            self.stop_event.set()
        return _NO_REPLY

    def create(self, c, typeid, /, *args, **kwds):
        """Make a new shared object of type *typeid*; return its id and
        the names of its exposed methods.  Its refcount starts at 1."""
        with self.mutex:
            maker, exposed, method_to_typeid, _ = self.registry[typeid]
            if maker is not None:
                obj = maker(*args, **kwds)
            elif kwds or len(args) != 1:
                raise ValueError(
                    "Without callable, must have one non-keyword argument")
            else:
                obj = args[0]
            if exposed is None:
                exposed = public_methods(obj)
            if method_to_typeid is not None:
                if not isinstance(method_to_typeid, dict):
                    raise TypeError(
                        f"Method_to_typeid {method_to_typeid!r}: type "
                        f"{type(method_to_typeid)!s}, not dict")
                exposed = [*exposed, *method_to_typeid]
            ident = format(id(obj), 'x')
            util.debug('%r callable returned object with id %r',
                       typeid, ident)
            self.id_to_obj[ident] = (obj, set(exposed), method_to_typeid)
            self.id_to_refcount.setdefault(ident, 0)
        self.incref(c, ident)
        return ident, tuple(exposed)

    def get_methods(self, c, token):
        """The exposed method names of the object *token* names."""
        return tuple(self.id_to_obj[token.id][1])

    def accept_connection(self, c, name):
        """Keep this connection: serve its proxy requests from now on."""
        threading.current_thread().name = name
        c.send(('#RETURN', None))
        self.serve_client(c)
        return _NO_REPLY

    def incref(self, c, ident):
        with self.mutex:
            if ident in self.id_to_refcount:
                self.id_to_refcount[ident] += 1
                return
            # a proxy held inside the manager is handed out again: track
            # the referent anew from the stash RebuildProxy made
            stashed = self.id_to_local_proxy_obj.get(ident)
            if stashed is None:
                raise KeyError(ident)
            self.id_to_refcount[ident] = 1
            self.id_to_obj[ident] = stashed
            util.debug('Server re-enabled tracking & INCREF %r', ident)

    def decref(self, c, ident):
        if (ident not in self.id_to_refcount
                and ident in self.id_to_local_proxy_obj):
            util.debug('Server DECREF skipping %r', ident)
            return
        doomed = None
        with self.mutex:
            count = self.id_to_refcount[ident]
            if count <= 0:
                raise AssertionError(
                    f"Id {ident!s} ({self.id_to_obj[ident]!r}) has refcount "
                    f"{count:n}, not 1+")
            if count > 1:
                self.id_to_refcount[ident] = count - 1
            else:
                del self.id_to_refcount[ident]
                doomed = self.id_to_obj.pop(ident, None)
                util.debug('disposing of obj with id %r', ident)
        # The referent dies here, outside the mutex: it may hold proxies
        # whose finalizers call back into this server.
        del doomed


class State(object):
    """The life-cycle state of a manager, shared with its finalizer."""
    __slots__ = ['value']
    INITIAL = 0
    STARTED = 1
    SHUTDOWN = 2


# ---------------------------------------------------------------------------
# Managers
# ---------------------------------------------------------------------------

def _refuse_unless_initial(state, server='server', manager='Manager'):
    value = state.value
    if value == State.INITIAL:
        return
    if value == State.STARTED:
        raise ProcessError(f"Already started {server}")
    if value == State.SHUTDOWN:
        raise ProcessError(f"{manager} has shut down")
    raise ProcessError(f"Unknown state {value!r}")


class BaseManager(object):
    """A manager: starts (or connects to) a server process that holds the
    objects, and hands out proxies to them."""

    _Server = Server
    _registry = {}      # typeid -> (callable, exposed, method_to_typeid,
                        #            proxytype); see register()

    def __init__(self, address=None, authkey=None, serializer='pickle',
                 ctx=None, *, shutdown_timeout=1.0):
        if ctx is None:
            from . import get_context
            ctx = get_context()
        self._ctx = ctx
        self._process = None
        self._serializer = serializer
        self._Listener, self._Client = listener_client[serializer]
        # for a server being started at ('', 0), say, the real address is
        # known once it listens
        self._address = address
        self._authkey = process.AuthenticationString(
            process.current_process().authkey if authkey is None else authkey)
        self._shutdown_timeout = shutdown_timeout
        self._state = State()
        self._state.value = State.INITIAL

    @property
    def address(self):
        return self._address

    def get_server(self):
        """A Server for this manager, to run with serve_forever()."""
        _refuse_unless_initial(self._state)
        return self._Server(self._registry, self._address, self._authkey,
                            self._serializer)

    def connect(self):
        """Use the server already running at this manager's address."""
        _call_server(self._Client, self._address, self._authkey, 'dummy')
        self._state.value = State.STARTED

    def start(self, initializer=None, initargs=()):
        """Start a server process for this manager."""
        _refuse_unless_initial(self._state)
        if initializer is not None and not callable(initializer):
            raise TypeError('initializer must be a callable')
        reader, writer = connection.Pipe(duplex=False)
        try:
            try:
                proc = self._process = self._ctx.Process(
                    target=type(self)._run_server,
                    args=(self._registry, self._address, self._authkey,
                          self._serializer, writer, initializer, initargs))
                proc.name = '-'.join(
                    [type(self).__name__, ':'.join(map(str, proc._identity))])
                proc.start()
            finally:
                writer.close()
            try:
                outcome, detail = reader.recv()
            except EOFError:
                proc.join(self._shutdown_timeout)
                raise ProcessError(
                    f'the manager process {proc.name} exited (code '
                    f'{proc.exitcode}) before its server was listening'
                ) from None
        finally:
            reader.close()
        if outcome != 'ok':
            proc.join(self._shutdown_timeout)
            raise detail
        self._address = detail
        self._state.value = State.STARTED
        self.shutdown = util.Finalize(
            self, type(self)._finalize_manager,
            args=(proc, self._address, self._authkey, self._state,
                  self._Client, self._shutdown_timeout),
            exitpriority=0)

    @classmethod
    def _run_server(cls, registry, address, authkey, serializer, writer,
                    initializer=None, initargs=()):
        """Body of the manager process: report the server's address (or
        why there is none), then serve."""
        # bpo-36368: Ctrl-C in a terminal is for the parent
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if initializer is not None:
                initializer(*initargs)
            server = cls._Server(registry, address, authkey, serializer)
        except Exception as exc:
            try:
                writer.send(('error', exc))
            except Exception:
                writer.send(('error', ProcessError(
                    f'manager server failed to start: {exc!r}')))
            writer.close()
            raise
        writer.send(('ok', server.address))
        writer.close()
        util.info('manager serving at %r', server.address)
        _stop_when_orphaned(server)
        server.serve_forever()

    def _create(self, typeid, /, *args, **kwds):
        """Make a shared object; return its token and exposed names."""
        assert self._state.value == State.STARTED, 'server not yet started'
        ident, exposed = _call_server(self._Client, self._address,
                                      self._authkey, 'create',
                                      (typeid,) + args, kwds)
        return Token(typeid, self._address, ident), exposed

    def join(self, timeout=None):
        """Wait for the manager process to exit."""
        if self._process is None:
            return
        self._process.join(timeout)
        if not self._process.is_alive():
            self._process = None

    def _debug_info(self):
        return _call_server(self._Client, self._address, self._authkey,
                            'debug_info')

    def _number_of_objects(self):
        return _call_server(self._Client, self._address, self._authkey,
                            'number_of_objects')

    def __enter__(self):
        if self._state.value == State.INITIAL:
            self.start()
        value = self._state.value
        if value == State.STARTED:
            return self
        if value == State.INITIAL:
            raise ProcessError("Unable to start server")
        if value == State.SHUTDOWN:
            raise ProcessError("Manager has shut down")
        raise ProcessError(f"Unknown state {value!r}")

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.shutdown()

    @staticmethod
    def _finalize_manager(process, address, authkey, state, _Client,
                          shutdown_timeout):
        """Stop the manager process: ask, then terminate, then kill."""
        if process.is_alive():
            util.info('sending shutdown message to manager')
            try:
                _call_server(_Client, address, authkey, 'shutdown')
            except Exception:
                pass
            process.join(timeout=shutdown_timeout)
            for step in ('terminate', 'kill'):
                if not process.is_alive() or not hasattr(process, step):
                    break
                util.info('manager still alive; trying %s()', step)
                getattr(process, step)()
                process.join(timeout=shutdown_timeout if step == 'terminate'
                             else None)
        state.value = State.SHUTDOWN
        BaseProxy._address_to_local.pop(address, None)

    @classmethod
    def register(cls, typeid, callable=None, proxytype=None, exposed=None,
                 method_to_typeid=None, create_method=True):
        """Register *typeid*: what makes such objects in the server
        (*callable*), which proxy type stands for them, which methods
        they expose and which methods return other shared objects."""
        if '_registry' not in cls.__dict__:
            cls._registry = dict(cls._registry)
        if proxytype is None:
            proxytype = AutoProxy
        exposed = exposed or getattr(proxytype, '_exposed_', None)
        method_to_typeid = (method_to_typeid
                            or getattr(proxytype, '_method_to_typeid_', None))
        for key, value in (method_to_typeid or {}).items():
            assert type(key) is str, f'{key!r} is not a string'
            assert type(value) is str, f'{value!r} is not a string'
        cls._registry[typeid] = (callable, exposed, method_to_typeid,
                                 proxytype)
        if create_method:
            setattr(cls, typeid, _creator(typeid, proxytype))


def _proxy_taking_reference(proxytype, token, serializer, manager, authkey,
                            exposed):
    """A proxy for a referent the server has just counted one reference
    to on our behalf (create(), or a method returning a shared object).
    A BaseProxy takes that reference over; any other proxy type takes its
    own and the server's is dropped (two more connections)."""
    if proxytype is AutoProxy or (isinstance(proxytype, type)
                                  and issubclass(proxytype, BaseProxy)):
        proxy = proxytype(token, serializer, manager=manager,
                          authkey=authkey, exposed=exposed, incref=False)
        proxy._hold()
        return proxy
    proxy = proxytype(token, serializer, manager=manager, authkey=authkey,
                      exposed=exposed)
    _call_server(listener_client[serializer][1], token.address, authkey,
                 'decref', (token.id,))
    return proxy


def _stop_when_orphaned(server):
    """Stop serving once the process that started this manager has died
    (a killed parent would otherwise leave the manager running for good;
    a parent that exits normally shuts it down through its finalizer)."""
    parent = process.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()
        util.info('the process that started this manager has exited')
        server.stop_event.set()
    threading.Thread(target=watch, name='ManagerParentWatch',
                     daemon=True).start()


def _creator(typeid, proxytype):
    """The manager method that makes a shared *typeid* and its proxy."""
    def create(self, /, *args, **kwds):
        util.debug('requesting creation of a shared %r object', typeid)
        token, exposed = self._create(typeid, *args, **kwds)
        return _proxy_taking_reference(proxytype, token, self._serializer,
                                       self, self._authkey, exposed)
    create.__name__ = create.__qualname__ = typeid
    return create


# ---------------------------------------------------------------------------
# Proxies
# ---------------------------------------------------------------------------

class ProcessLocalSet(set):
    """A set emptied in a child process after fork (and unpickled empty)."""

    def __reduce__(self):
        return type(self), ()

    def __init__(self):
        util.register_after_fork(self, set.clear)


class BaseProxy(object):
    """Base class of proxies: forwards method calls to the referent in
    the manager process over a per-thread connection."""

    _address_to_local = {}
    _mutex = util.ForkAwareThreadLock()
    # Numbers the proxies of this process.  A referent's id cannot stand for
    # a proxy in the per-process set below: two proxies of one referent
    # share it (the first to die would take the entry of both), and ids are
    # reused.  A serial never is.
    _next_serial = 1

    def __init__(self, token, serializer, manager=None, authkey=None,
                 exposed=None, incref=True, manager_owned=False):
        with BaseProxy._mutex:
            shared = BaseProxy._address_to_local.get(token.address)
            if shared is None:
                shared = (util.ForkAwareLocal(), ProcessLocalSet())
                BaseProxy._address_to_local[token.address] = shared
            self._serial = BaseProxy._next_serial
            BaseProxy._next_serial += 1
        # per thread: the connection to this manager; per process: the
        # serials of the proxies holding a reference in that manager (when
        # none is left, the thread's connection is closed)
        self._tls, self._all_serials = shared
        self._token = token
        self._id = token.id
        self._manager = manager
        self._serializer = serializer
        self._Client = listener_client[serializer][1]
        # True for a proxy living inside the manager process itself
        self._owned_by_manager = manager_owned
        if authkey is None:
            authkey = (process.current_process().authkey if manager is None
                       else manager._authkey)
        self._authkey = process.AuthenticationString(authkey)
        if incref:
            self._incref()
        util.register_after_fork(self, BaseProxy._after_fork)

    def _connect(self):
        thread = threading.current_thread().name
        name = process.current_process().name
        if thread != 'MainThread':
            name = f'{name}|{thread}'
        util.debug('making connection to manager')
        conn = self._Client(self._token.address, authkey=self._authkey)
        dispatch(conn, None, 'accept_connection', (name,))
        self._tls.connection = conn
        return conn

    def _lost_manager(self, conn, exc):
        # forget the dead connection: the next call reconnects
        try:
            del self._tls.connection
        except AttributeError:
            pass
        try:
            conn.close()
        except Exception:
            pass
        return EOFError(f'lost the connection to the manager at '
                        f'{self._token.address!r} ({exc!r}); has its '
                        f'process exited?')

    # kwds={}: the stdlib's signature; never mutated here
    def _callmethod(self, methodname, args=(), kwds={}):  # noqa: B006
        """Call *methodname* on the referent; return a copy of the result
        (or a proxy, for methods that return shared objects)."""
        try:
            conn = self._tls.connection
        except AttributeError:
            util.debug('thread %r does not own a connection',
                       threading.current_thread().name)
            conn = self._connect()
        try:
            conn.send((self._id, methodname, args, kwds))
            kind, result = conn.recv()
        except (EOFError, ConnectionError) as exc:
            raise self._lost_manager(conn, exc) from exc
        if kind == '#RETURN':
            return result
        if kind == '#PROXY':
            return self._adopt(*result)
        error, result = convert_to_error(kind, result), None
        try:
            raise error
        finally:
            error = None    # no cycle through this frame

    def _adopt(self, exposed, token):
        """A proxy for a shared object a method call has just made."""
        manager = self._manager
        if manager is not None:
            proxytype = manager._registry[token.typeid][-1]
        else:
            proxytype = AutoProxy
        token.address = self._token.address
        return _proxy_taking_reference(proxytype, token, self._serializer,
                                       manager, self._authkey, exposed)

    def _getvalue(self):
        """A copy of the referent."""
        return self._callmethod('#GETVALUE')

    def _incref(self):
        if self._owned_by_manager:
            util.debug('owned_by_manager skipped INCREF of %r',
                       self._token.id)
            return
        _call_server(self._Client, self._token.address, self._authkey,
                     'incref', (self._id,))
        util.debug('INCREF %r', self._token.id)
        self._hold()

    def _hold(self):
        """Hold a server reference to the referent until this proxy dies
        (or the process exits)."""
        self._all_serials.add(self._serial)
        state = None if self._manager is None else self._manager._state
        self._close = util.Finalize(
            self, BaseProxy._decref,
            args=(self._token, self._serial, self._authkey, state,
                  self._tls, self._all_serials, self._Client),
            exitpriority=10)

    @staticmethod
    def _decref(token, serial, authkey, state, tls, serials, _Client):
        serials.discard(serial)
        if state is not None and state.value != State.STARTED:
            util.debug('DECREF %r -- manager already shutdown', token.id)
        else:
            util.debug('DECREF %r', token.id)
            try:
                _call_server(_Client, token.address, authkey, 'decref',
                             (token.id,))
            except Exception as exc:
                util.debug('... decref failed %s', exc)
        if serials:
            return
        # this process holds nothing more from that manager
        conn = getattr(tls, 'connection', None)
        if conn is not None:
            util.debug('thread %r has no more proxies so closing conn',
                       threading.current_thread().name)
            del tls.connection
            conn.close()

    def _after_fork(self):
        # a forked child holds a reference of its own (it has no manager
        # object); most likely failure: the manager has shut down
        self._manager = None
        try:
            self._incref()
            return
        except Exception as exc:
            failure = exc
        util.info('incref failed: %s' % failure)

    def __reduce__(self):
        auto = getattr(self, '_isauto', False)
        kwds = {'exposed': self._exposed_} if auto else {}
        if get_spawning_popen() is not None:
            # only a child being spawned may learn the key
            kwds['authkey'] = self._authkey
        maker = AutoProxy if auto else type(self)
        return RebuildProxy, (maker, self._token, self._serializer, kwds)

    def __deepcopy__(self, memo):
        return self._getvalue()

    def __repr__(self):
        return (f'<{type(self).__name__} object, typeid '
                f'{self._token.typeid!r} at {id(self):#x}>')

    def __str__(self):
        """The referent's repr (or a note saying it could not be had)."""
        try:
            return self._callmethod('__repr__')
        except Exception:
            return repr(self)[:-1] + "; '__str__()' failed>"


def RebuildProxy(func, token, serializer, kwds):
    """Unpickle a proxy (inside the manager process: one it owns)."""
    here = process.current_process()
    server = getattr(here, '_manager_server', None)
    if server is not None and server.address == token.address:
        util.debug('Rebuild a proxy owned by manager, token=%r', token)
        kwds['manager_owned'] = True
        stash = server.id_to_local_proxy_obj
        if token.id not in stash:
            stash[token.id] = server.id_to_obj[token.id]
    incref = kwds.pop('incref', True) and not getattr(here, '_inheriting',
                                                      False)
    return func(token, serializer, incref=incref, **kwds)


def _forwarder(name):
    """A proxy method that calls *name* on the referent."""
    def forward(self, /, *args, **kwds):
        return self._callmethod(name, args, kwds)
    forward.__name__ = forward.__qualname__ = name
    return forward


def _forward(cls, names):
    for name in names:
        setattr(cls, name, _forwarder(name))
    return cls


# _cache={}: the stdlib's signature, and meant to be shared by every call
def MakeProxyType(name, exposed, _cache={}):  # noqa: B006
    """A BaseProxy subclass with a forwarding method per exposed name."""
    exposed = tuple(exposed)
    key = (name, exposed)
    made = _cache.get(key)
    if made is None:
        made = _forward(type(name, (BaseProxy,), {'_exposed_': exposed}),
                        exposed)
        _cache[key] = made
    return made


def AutoProxy(token, serializer, manager=None, authkey=None,
              exposed=None, incref=True, manager_owned=False):
    """A proxy whose methods are those the referent exposes (asked from
    the server when not given)."""
    if exposed is None:
        exposed = _call_server(listener_client[serializer][1],
                               token.address, authkey, 'get_methods',
                               (token,))
    if authkey is None:
        authkey = (manager._authkey if manager is not None
                   else process.current_process().authkey)
    proxy = MakeProxyType(f'AutoProxy[{token.typeid}]', exposed)(
        token, serializer, manager=manager, authkey=authkey, incref=incref,
        manager_owned=manager_owned)
    proxy._isauto = True     # pickled as an AutoProxy
    return proxy


# ---------------------------------------------------------------------------
# What SyncManager shares, and its proxies
# ---------------------------------------------------------------------------

class Namespace(object):
    """A plain attribute bag; repr lists the public attributes, sorted."""

    def __init__(self, /, **kwds):
        vars(self).update(kwds)

    def __repr__(self):
        shown = [f'{key}={val!r}' for key, val in vars(self).items()
                 if not key.startswith('_')]
        shown.sort()
        return f"{type(self).__name__}({', '.join(shown)})"


def Array(typecode, sequence, lock=True):
    """An array.array (the referent of ArrayProxy)."""
    return array.array(typecode, sequence)


class Value(object):
    """A boxed value with get()/set() (the referent of ValueProxy)."""

    def __init__(self, typecode, value, lock=True):
        self._typecode, self._value = typecode, value

    def get(self):
        return self._value

    def set(self, value):
        self._value = value

    value = property(get, set)

    def __repr__(self):
        return f'{type(self).__name__}({self._typecode!r}, {self._value!r})'


# The proxies below forward most methods as they are (see _forward); the
# methods written out are those that do more than forward.

class IteratorProxy(BaseProxy):
    """Proxy of an iterator or generator living in the manager."""
    _exposed_ = ('__next__', 'send', 'throw', 'close')

    def __iter__(self):
        return self


# threading's locks answer locked() on 3.14 (RLock and Condition too)
_LOCKED = ('locked',) if _PY314 else ()


class AcquirerProxy(BaseProxy):
    """Proxy of a lock or semaphore."""
    _exposed_ = ('acquire', 'release', *_LOCKED)

    def acquire(self, blocking=True, timeout=None):
        # threading locks take no None timeout: leave it out
        extra = () if timeout is None else (timeout,)
        return self._callmethod('acquire', (blocking, *extra))

    def __exit__(self, exc_type, exc_val, exc_tb):
        return self._callmethod('release')

    def __enter__(self):
        return self._callmethod('acquire')


class ConditionProxy(AcquirerProxy):
    """Proxy of a threading.Condition."""
    _exposed_ = ('acquire', 'release', *_LOCKED, 'wait', 'notify',
                 'notify_all')

    def wait_for(self, predicate, timeout=None):
        """Wait until predicate() is true or *timeout* has passed; return
        the last value of predicate()."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            outcome = predicate()
            if outcome:
                return outcome
            if deadline is None:
                self.wait(None)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return outcome
            self.wait(left)


class EventProxy(BaseProxy):
    """Proxy of a threading.Event."""
    _exposed_ = ('is_set', 'set', 'clear', 'wait')


def _remote_attribute(name):
    return property(lambda self: self._callmethod('__getattribute__',
                                                  (name,)))


class BarrierProxy(BaseProxy):
    """Proxy of a threading.Barrier."""
    _exposed_ = ('__getattribute__', 'wait', 'abort', 'reset')
    parties = _remote_attribute('parties')
    n_waiting = _remote_attribute('n_waiting')
    broken = _remote_attribute('broken')


class NamespaceProxy(BaseProxy):
    """Attribute access on the proxy is attribute access on the referent,
    except for names starting with '_' (the proxy's own)."""
    _exposed_ = ('__getattribute__', '__setattr__', '__delattr__')

    def _remote(self, op, *args):
        return object.__getattribute__(self, '_callmethod')(op, args)

    def __getattr__(self, key):
        if key[0] == '_':
            return object.__getattribute__(self, key)
        return self._remote('__getattribute__', key)

    def __setattr__(self, key, value):
        if key[0] == '_':
            return object.__setattr__(self, key, value)
        return self._remote('__setattr__', key, value)

    def __delattr__(self, key):
        if key[0] == '_':
            return object.__delattr__(self, key)
        return self._remote('__delattr__', key)


class ValueProxy(BaseProxy):
    """Proxy of a Value: get(), set() and the `value` property."""
    _exposed_ = ('get', 'set')
    __class_getitem__ = classmethod(types.GenericAlias)


for _cls, _names in ((IteratorProxy, IteratorProxy._exposed_),
                     (AcquirerProxy, ('release', *_LOCKED)),
                     (ConditionProxy, ('wait', 'notify', 'notify_all')),
                     (EventProxy, EventProxy._exposed_),
                     (BarrierProxy, ('wait', 'abort', 'reset')),
                     (ValueProxy, ValueProxy._exposed_)):
    _forward(_cls, _names)
del _cls, _names
ValueProxy.value = property(ValueProxy.get, ValueProxy.set)


BaseListProxy = MakeProxyType('BaseListProxy', """
    __add__ __contains__ __delitem__ __getitem__ __len__ __mul__
    __reversed__ __rmul__ __setitem__ append count extend index insert pop
    remove reverse sort __imul__""".split() + (
    ['clear', 'copy'] if _PY314 else []))


def _in_place(methodname):
    """An augmented assignment that changes the referent, not the proxy."""
    def operator(self, value):
        self._callmethod(methodname, (value,))
        return self
    return operator


class ListProxy(BaseListProxy):
    """Proxy of a list; += and *= change the referent in place."""
    __iadd__ = _in_place('extend')
    __imul__ = _in_place('__imul__')

    if _PY313:
        __class_getitem__ = classmethod(types.GenericAlias)


if _PY314:
    _BaseDictProxy = MakeProxyType('_BaseDictProxy', """
        __contains__ __delitem__ __getitem__ __ior__ __iter__ __len__
        __or__ __reversed__ __ror__ __setitem__ clear copy fromkeys get
        items keys pop popitem setdefault update values""".split())
else:
    _BaseDictProxy = MakeProxyType('DictProxy', """
        __contains__ __delitem__ __getitem__ __iter__ __len__ __setitem__
        clear copy get items keys pop popitem setdefault update
        values""".split())
_BaseDictProxy._method_to_typeid_ = {'__iter__': 'Iterator'}

if _PY314:
    class DictProxy(_BaseDictProxy):
        """Proxy of a dict; |= changes the referent in place."""
        __ior__ = _in_place('__ior__')
        __class_getitem__ = classmethod(types.GenericAlias)
elif _PY313:
    class DictProxy(_BaseDictProxy):
        """Proxy of a dict."""
        __class_getitem__ = classmethod(types.GenericAlias)
else:
    DictProxy = _BaseDictProxy


if _PY314:
    _BaseSetProxy = MakeProxyType('_BaseSetProxy', """
        __and__ __class_getitem__ __contains__ __iand__ __ior__ __isub__
        __iter__ __ixor__ __len__ __or__ __rand__ __ror__ __rsub__ __rxor__
        __sub__ __xor__ __ge__ __gt__ __le__ __lt__ add clear copy
        difference difference_update discard intersection
        intersection_update isdisjoint issubset issuperset pop remove
        symmetric_difference symmetric_difference_update union
        update""".split())

    class SetProxy(_BaseSetProxy):
        """Proxy of a set; the augmented assignments (|= &= ^= -=) change
        the referent in place."""
        __ior__ = _in_place('__ior__')
        __iand__ = _in_place('__iand__')
        __ixor__ = _in_place('__ixor__')
        __isub__ = _in_place('__isub__')
        __class_getitem__ = classmethod(types.GenericAlias)

    collections.abc.MutableSequence.register(BaseListProxy)
    collections.abc.MutableMapping.register(_BaseDictProxy)
    # As the stdlib does (3.14, 3.15): the set proxy is registered as a
    # MutableMapping too, not as a MutableSet.
    collections.abc.MutableMapping.register(_BaseSetProxy)


ArrayProxy = MakeProxyType('ArrayProxy',
                           ('__len__', '__getitem__', '__setitem__'))


BasePoolProxy = MakeProxyType('PoolProxy', """
    apply apply_async close imap imap_unordered join map map_async starmap
    starmap_async terminate""".split())
BasePoolProxy._method_to_typeid_ = dict.fromkeys(
    ('apply_async', 'map_async', 'starmap_async'), 'AsyncResult')
BasePoolProxy._method_to_typeid_.update(imap='Iterator',
                                        imap_unordered='Iterator')


class PoolProxy(BasePoolProxy):
    """Proxy of a Pool in the manager; leaving a with block terminates
    it."""

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()

    def __enter__(self):
        return self


class SyncManager(BaseManager):
    """A manager sharing the threading synchronization types, queues,
    list, dict (and set, from 3.14), Namespace, Value, Array and Pool.
    `cmultiprocessing.Manager()` returns a started one."""


for _typeid, _maker, _proxy in (
        ('Queue', queue.Queue, None),
        ('JoinableQueue', queue.Queue, None),
        ('Event', threading.Event, EventProxy),
        ('Lock', threading.Lock, AcquirerProxy),
        ('RLock', threading.RLock, AcquirerProxy),
        ('Semaphore', threading.Semaphore, AcquirerProxy),
        ('BoundedSemaphore', threading.BoundedSemaphore, AcquirerProxy),
        ('Condition', threading.Condition, ConditionProxy),
        ('Barrier', threading.Barrier, BarrierProxy),
        ('Pool', pool.Pool, PoolProxy),
        ('list', list, ListProxy),
        ('dict', dict, DictProxy),
        *((('set', set, SetProxy),) if _PY314 else ()),
        ('Value', Value, ValueProxy),
        ('Array', Array, ArrayProxy),
        ('Namespace', Namespace, NamespaceProxy)):
    SyncManager.register(_typeid, _maker, _proxy)
del _typeid, _maker, _proxy

# what PoolProxy's methods return
SyncManager.register('Iterator', proxytype=IteratorProxy, create_method=False)
SyncManager.register('AsyncResult', create_method=False)


# ---------------------------------------------------------------------------
# SharedMemoryManager
# ---------------------------------------------------------------------------

if HAS_SHMEM:

    def _unlink_segment(segment_name):
        segment = shared_memory.SharedMemory(segment_name)
        segment.close()
        segment.unlink()

    class _SharedMemoryTracker:
        """Names of the segments a SharedMemoryServer unlinks when it
        shuts down."""

        def __init__(self, name, segment_names=None):
            self.shared_memory_context_name = name
            self.segment_names = [] if segment_names is None else segment_names

        def __getstate__(self):
            return (self.shared_memory_context_name, self.segment_names)

        def __setstate__(self, state):
            self.__init__(*state)

        def __del__(self):
            util.debug(f"Call {type(self).__name__}.__del__ in "
                       f"{os.getpid()}")
            self.unlink()

        def register_segment(self, segment_name):
            util.debug(f"Register segment {segment_name!r} in pid "
                       f"{os.getpid()}")
            self.segment_names.append(segment_name)

        def destroy_segment(self, segment_name):
            """Stop tracking a segment and unlink it."""
            util.debug(f"Destroy segment {segment_name!r} in pid "
                       f"{os.getpid()}")
            self.segment_names.remove(segment_name)
            _unlink_segment(segment_name)

        def unlink(self):
            """Unlink every tracked segment."""
            while self.segment_names:
                self.destroy_segment(self.segment_names[0])

    class SharedMemoryServer(Server):
        """A Server that also keeps the names of shared memory segments
        and unlinks them when it shuts down."""

        public = [*Server.public,
                  'track_segment', 'release_segment', 'list_segments']

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            label = self.address
            if isinstance(label, bytes):
                # a Linux abstract socket address
                label = os.fsdecode(label)
            self.shared_memory_context = _SharedMemoryTracker(
                f"shm_{label}_{os.getpid()}")
            util.debug(f"SharedMemoryServer started by pid {os.getpid()}")

        def track_segment(self, c, segment_name):
            self.shared_memory_context.register_segment(segment_name)

        def release_segment(self, c, segment_name):
            self.shared_memory_context.destroy_segment(segment_name)

        def list_segments(self, c):
            return self.shared_memory_context.segment_names

        def create(self, c, typeid, /, *args, **kwargs):
            """As Server.create(); a proxy type that asks for it (by having
            `_shared_memory_proxy`) gets the segment tracker passed as the
            `shared_memory_context` keyword."""
            wants_tracker = hasattr(self.registry[typeid][-1],
                                    "_shared_memory_proxy")
            if wants_tracker:
                kwargs['shared_memory_context'] = self.shared_memory_context
            return super().create(c, typeid, *args, **kwargs)

        def shutdown(self, c):
            """Unlink every tracked segment, then shut down."""
            self.shared_memory_context.unlink()
            return super().shutdown(c)

    class SharedMemoryManager(BaseManager):
        """A manager whose SharedMemory and ShareableList blocks are
        unlinked when it shuts down."""

        _Server = SharedMemoryServer

        def __init__(self, *args, **kwargs):
            if os.name == "posix":
                # bpo-36867: one resource tracker, running before the
                # server process starts from this one
                from . import resource_tracker
                resource_tracker.ensure_running()
            super().__init__(*args, **kwargs)
            util.debug(f"{type(self).__name__} created by pid {os.getpid()}")

        def __del__(self):
            util.debug(f"{type(self).__name__}.__del__ by pid {os.getpid()}")

        def get_server(self):
            _refuse_unless_initial(self._state, 'SharedMemoryServer',
                                   'SharedMemoryManager')
            return self._Server(self._registry, self._address,
                                self._authkey, self._serializer)

        def _track(self, segment):
            try:
                _call_server(self._Client, self._address, self._authkey,
                             'track_segment', (segment.name,))
            except BaseException:
                segment.unlink()
                raise

        def SharedMemory(self, size):
            """A new SharedMemory block of *size* bytes, unlinked when the
            manager shuts down."""
            block = shared_memory.SharedMemory(None, create=True, size=size)
            self._track(block)
            return block

        def ShareableList(self, sequence):
            """A new ShareableList holding *sequence*, unlinked when the
            manager shuts down."""
            shared = shared_memory.ShareableList(sequence)
            self._track(shared.shm)
            return shared
