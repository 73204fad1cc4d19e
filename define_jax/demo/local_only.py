"""The demo's guard: requests only from this machine, and only from the demo's own page.

An ASGI middleware (LocalOnly) for the Gradio app: a page elsewhere on the web must not
reach a demo bound to 127.0.0.1 through DNS rebinding, nor post to it from another origin.
"""

from __future__ import annotations

import logging
import socket
from typing import Callable, Sequence

LOCAL_NAMES = ('127.0.0.1', 'localhost', '::1')

log = logging.getLogger('define_jax.demo')


def _hostname(value: str) -> str:
  """'127.0.0.1' from '127.0.0.1:7860', '::1' from '[::1]:7860', 'a.b' from 'http://a.b:1'."""
  return _host_and_port(value)[0]


def _host_and_port(value: str) -> tuple[str, str]:
  """(host, port) of a Host header or an Origin; the port is '' when not given (an Origin's
  default port is its scheme's)."""
  scheme, _, rest = value.rpartition('://')
  value = rest.split('/', 1)[0].lower()
  if value.startswith('['):
    host, _, port = value[1:].partition(']')
    port = port[1:]
  elif value.count(':') == 1:
    host, port = value.split(':')
  else:
    host, port = value, ''
  return host, port or {'http': '80', 'https': '443'}.get(scheme.lower(), '')


class LocalOnly:
  """ASGI middleware: refuses requests whose Host is not one of `hosts` (DNS rebinding) and
  state-changing requests from another origin (a page elsewhere posting to the demo).

  hosts=None accepts any Host (the user bound to 0.0.0.0 or :: on purpose); the Origin
  must then match the Host. Either way the Origin's port must be the Host's: another server
  on this machine (http://localhost:9999) is another origin.
  """

  def __init__(self, app: Callable, hosts: Sequence[str] | None):
    self.app = app
    self.hosts = None if hosts is None else {h.lower() for h in hosts}

  async def __call__(self, scope, receive, send):
    if scope['type'] not in ('http', 'websocket'):
      return await self.app(scope, receive, send)
    headers = {k.decode('latin-1').lower(): v.decode('latin-1') for k, v in scope['headers']}
    host = _hostname(headers.get('host', ''))
    problem = None
    if self.hosts is not None and host not in self.hosts:
      problem = f'Host {headers.get("host", "")!r} is not this demo'
    origin = headers.get('origin')
    if problem is None and origin is not None and scope.get('method', 'GET') not in (
        'GET', 'HEAD', 'OPTIONS'):
      allowed = self.hosts if self.hosts is not None else {host}
      origin_host, origin_port = _host_and_port(origin)
      host_port = _host_and_port(headers.get('host', ''))[1] or '80'
      if origin_host not in allowed or origin_port != host_port:
        problem = f'cross-origin request from {origin!r}'
    if problem is None:
      return await self.app(scope, receive, send)
    log.warning('Refused %s %s: %s.', scope.get('method', ''), scope.get('path', ''), problem)
    if scope['type'] == 'websocket':
      return await send({'type': 'websocket.close', 'code': 1008})
    body = f'Refused: {problem}.'.encode()
    await send({'type': 'http.response.start', 'status': 403,
                'headers': [(b'content-type', b'text/plain; charset=utf-8'),
                            (b'content-length', str(len(body)).encode())]})
    await send({'type': 'http.response.body', 'body': body})


def middleware(hosts: Sequence[str] | None):
  """LocalOnly for Gradio's app_kwargs (starlette is imported with gradio)."""
  from starlette.middleware import Middleware
  return Middleware(LocalOnly, hosts=hosts)


def free_port(host: str) -> int:
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  with socket.socket(family, socket.SOCK_STREAM) as probe:
    probe.bind((host, 0))
    return probe.getsockname()[1]
