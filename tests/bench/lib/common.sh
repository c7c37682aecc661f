# Shared by the component benches that serve a release tree (sourced, not
# run: `./run bench` only runs tests/bench/*.sh and crates/*/bench.sh).
#   bench_nginx ROOT DIR   nginx on 127.0.0.1 (random port, its own config,
#                          prefix and logs under DIR; never the host's
#                          service) serving ROOT; sets $bench_url and
#                          $bench_ngx (its PID) and logs every request with
#                          its Range and body bytes to DIR/nginx/logs/access.log
#   bench_sent DIR [FROM]  body bytes nginx sent since log line FROM (0)
#   bench_lines DIR        lines in that log now
#   bench_t CMD...         seconds CMD took (its stderr in $bench_err)
#   bench_ratio A B        A / B to 2 decimals
#   bench_median X...      the median of the numbers
bench_url=; bench_ngx=; bench_err=${bench_err:-/dev/null}

bench_nginx() {
  local root=$1 dir=$2 port
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  mkdir -p "$dir/nginx/logs"
  cat > "$dir/nginx/nginx.conf" <<NGX
daemon off; master_process off; worker_processes 1;
pid $dir/nginx/nginx.pid; error_log $dir/nginx/logs/error.log warn;
events { worker_connections 64; }
http { log_format sent '\$request_uri "\$http_range" \$status \$body_bytes_sent';
  access_log $dir/nginx/logs/access.log sent;
  client_body_temp_path $dir/nginx/b; proxy_temp_path $dir/nginx/p;
  fastcgi_temp_path $dir/nginx/f; uwsgi_temp_path $dir/nginx/u; scgi_temp_path $dir/nginx/s;
  default_type application/octet-stream; sendfile on;
  server { listen 127.0.0.1:$port; root $root; } }
NGX
  nginx -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e "$dir/nginx/logs/error.log" &
  bench_ngx=$!
  bench_url=http://127.0.0.1:$port
  local _
  for _ in $(seq 100); do curl -s -o /dev/null "$bench_url/" && break; sleep 0.1; done
}

bench_lines() { wc -l < "$1/nginx/logs/access.log"; }

bench_sent() {
  tail -n +$((${2:-0} + 1)) "$1/nginx/logs/access.log" | awk '{s += $NF} END {print s + 0}'
}

bench_t() {
  local s e
  s=$(date +%s.%N)
  "$@" >/dev/null 2>"$bench_err" || { cat "$bench_err" >&2; return 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}

bench_ratio() { echo "scale=2; $1 / $2" | bc; }

bench_median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
