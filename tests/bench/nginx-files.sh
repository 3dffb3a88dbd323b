# shellcheck shell=bash
# Shared by the benchmarks that compare our downloads with nginx (sourced, not run).
#
# start_nginx_files WORKDIR ROOT PORT: nginx serving the files of ROOT on 127.0.0.1:PORT the
# way a tuned static server does (sendfile, tcp_nopush, no access log), its config and logs
# under WORKDIR/nginx; sets NGINX_PID. WORKDIR and ROOT must be readable by nginx's
# unprivileged workers.
start_nginx_files() {
    local work=$1 root=$2 port=$3
    mkdir -p "$work/nginx/logs"
    cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 1024; }
http {
    sendfile on;
    tcp_nopush on;
    access_log off;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$port;
        root $root;
    }
}
CONF
    nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
    NGINX_PID=$!
}
