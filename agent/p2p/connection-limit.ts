import type { Connection, Libp2p } from '@libp2p/interface'

export interface ConnectionLimitInit {
  maxConnections: number
  /** An inbound connection closed for being over the limit. */
  onRefused?: (connection: Connection) => void
}

/**
 * Holds the node to its connection limit. libp2p refuses inbound connections
 * at the limit only when they arrive one after another: a burst upgrades in
 * parallel and overshoots, and its pruning spares every connection with a
 * long-lived stream — which every mesh connection has (the announcement
 * channel). So the connections are counted as they open, and an inbound one
 * past the limit is closed at once. Returns a function that stops it.
 */
export function enforceConnectionLimit (node: Libp2p, init: ConnectionLimitInit): () => void {
  const counted = new Set<string>(node.getConnections().map(connection => connection.id))
  const onOpen = (event: CustomEvent<Connection>): void => {
    const connection = event.detail
    if (counted.size >= init.maxConnections && connection.direction === 'inbound') {
      init.onRefused?.(connection)
      connection.abort(new Error(`over the limit of ${init.maxConnections} connections`))
      return
    }
    counted.add(connection.id)
  }
  const onClose = (event: CustomEvent<Connection>): void => { counted.delete(event.detail.id) }
  node.addEventListener('connection:open', onOpen)
  node.addEventListener('connection:close', onClose)
  return () => {
    node.removeEventListener('connection:open', onOpen)
    node.removeEventListener('connection:close', onClose)
  }
}
