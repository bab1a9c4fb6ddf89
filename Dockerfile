# rubrisproxy in a container (docs/deploying.md):
#   docker build -t rubrisproxy .
#   docker run -d --name rubrisproxy -p 8080:8080 -v /etc/rubrisproxy:/etc/rubrisproxy:ro rubrisproxy
# (the directory holds rubrisproxy.toml and any files it names, readable by uid 10001)
FROM python:3.11-slim

# The README's install, in /opt/rubrisproxy: what is copied is what `pip install .` reads. The slim image has no
# C compiler, so the request path and the access-log line run as Python (docs/deploying.md).
WORKDIR /opt/rubrisproxy
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml setup.cfg setup.py README.md ./
COPY rubrisproxy ./rubrisproxy
COPY twisted ./twisted
RUN python3 -m venv .venv && .venv/bin/pip install .
# Listing twistd's plugins writes Twisted's plugin cache, which the user below could not write at each start.
RUN .venv/bin/twistd --help > /dev/null

# Run as a user of its own, never root. The configuration is mounted at /etc/rubrisproxy.
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin rubrisproxy
USER rubrisproxy
ENV PATH=/opt/rubrisproxy/.venv/bin:$PATH PYTHONUNBUFFERED=1 RUBRISPROXY_ADMIN=http://127.0.0.1:9000
EXPOSE 8080

# Healthy while the proxy answers GET /healthz on the admin listener the command below opens inside the
# container (loopback only): Python, as the image has no curl; rubrisproxy-ctl, which imports only the standard
# library (a fraction of `rubrisproxy ctl`'s start-up CPU, every 10 s).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["rubrisproxy-ctl", "health"]

# SIGTERM (docker stop) stops gracefully within shutdown.grace (30s): give it `docker stop -t 40`.
# SIGHUP (docker kill -s HUP) reloads the mounted file in place.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/rubrisproxy/.venv/bin/twistd", "--nodaemon", "--pidfile=", "rubrisproxy"]
CMD ["--config", "/etc/rubrisproxy/rubrisproxy.toml", "--admin", "tcp:9000:interface=127.0.0.1"]
