-- wrk's own report rounds latency to two digits and prints p99 only with
-- --latency, in a layout meant for people; run.sh wants exact figures, so
-- this prints one JSON line, marked for it to find, after wrk's report.
-- Latencies are in microseconds, as wrk records them.
done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'wrk-json: {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
