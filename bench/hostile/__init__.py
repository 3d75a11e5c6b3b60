"""Hostile clients below the API (issue 17), against a real server process on 127.0.0.1: each attack with the
limit that stops it loosened ("off": the server as it was before the limit) and with the shipped defaults ("on").

    python -m bench.hostile --model-dir models               # every attack, full counts (about 15 minutes, quiet machine)
    python -m bench.hostile --model-dir models --quick       # small counts and times
    python -m bench.hostile --model-dir models --through-nginx   # clients through deploy/nginx/nginx.conf

One JSON line per run (`via`: direct or nginx). With a memory cgroup (cgroups v1, as root) each server runs under
--memory-limit-mb (1280, as deploy/ sets it) from its first byte, so a run can end "killed"; peak_rss_mb is the
process's VmHWM. Attackers that speak raw HTTP/2 connect from 127.0.0.2, another client as far as the server and
nginx's per-address limits can tell. One module per attack; __main__ runs them.
"""
