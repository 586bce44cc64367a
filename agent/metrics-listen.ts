// Where the agent serves its metrics: parsed from the command line without loading prom-client.

export interface MetricsListen {
  host: string
  port: number
}

/** Parses `HOST:PORT` (or `PORT`, on loopback). */
export function parseMetricsListen (value: string): MetricsListen {
  const match = /^(?:(\[[0-9a-fA-F:]+\]|[^:]+):)?(\d{1,5})$/.exec(value)
  const port = Number(match?.[2])
  if (match === null || port > 65535) throw new Error(`${value} is not HOST:PORT`)
  return { host: (match[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port }
}
