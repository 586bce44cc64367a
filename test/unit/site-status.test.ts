import test from 'ava'
import { generateKeyPair } from '../../protocol/index.js'
import { StubCoordinator, StubGossipHub, stubAgent, until, type StubAgent } from '../helpers/status-stub.js'

async function site (count: number, tuning: Parameters<typeof stubAgent>[3] = {}): Promise<{ hub: StubGossipHub, coordinator: StubCoordinator, agents: StubAgent[] }> {
  const key = generateKeyPair()
  const hub = new StubGossipHub(key)
  const coordinator = new StubCoordinator(key)
  const agents: StubAgent[] = []
  for (let index = 1; index <= count; index++) agents.push(await stubAgent(hub, coordinator, `dev-${index}`, tuning))
  return { hub, coordinator, agents }
}

/** Waits until the agents agree on one relay among them, and returns it. */
async function agreedRelay (agents: StubAgent[]): Promise<StubAgent> {
  await until(() => {
    const relays = new Set(agents.map(agent => agent.site.relayPeer))
    return relays.size === 1 && agents.some(agent => agent.site.isRelay)
  }, 'the agents to agree on a relay')
  return agents.find(agent => agent.site.isRelay)!
}

async function allDelivered (coordinator: StubCoordinator, agents: StubAgent[], count: number): Promise<void> {
  await until(async () => coordinator.stored.size === count && (await Promise.all(agents.map(async agent => await agent.outbox.size()))).every(size => size === 0), `${count} records stored and every outbox empty`)
}

async function stopAll (agents: StubAgent[]): Promise<void> {
  await Promise.all(agents.map(async agent => { await agent.stop() }))
}

test('a site elects one relay; the others\' records go up through it in batches and its receipts empty their outboxes', async t => {
  const { coordinator, agents } = await site(3)
  try {
    const relay = await agreedRelay(agents)
    const before = coordinator.requests.length
    for (const agent of agents) for (let index = 0; index < 3; index++) await agent.record()
    await allDelivered(coordinator, agents, 9)
    const requests = coordinator.requests.slice(before)
    t.true(requests.length > 0)
    t.true(requests.every(request => request.via === relay.id && request.receipt), 'only the relay sent records, each time asking for a receipt')
    t.true(requests.length < 9, 'records went up together')
  } finally {
    await stopAll(agents)
  }
})

test('the relay dies: another takes over, and records issued meanwhile arrive, none lost', async t => {
  const { hub, coordinator, agents } = await site(3)
  try {
    const relay = await agreedRelay(agents)
    const survivors = agents.filter(agent => agent !== relay)
    for (const agent of survivors) await agent.record()
    await allDelivered(coordinator, survivors, 2)
    hub.leave(relay.id)
    await relay.site.stop()
    const sentBefore = coordinator.requests.length
    for (const agent of survivors) await agent.record()
    const next = await agreedRelay(survivors)
    t.not(next.id, relay.id)
    await allDelivered(coordinator, survivors, 4)
    t.is(coordinator.stored.size, 4, 'every record stored once')
    t.true(coordinator.requests.slice(sentBefore).some(request => request.via === next.id), 'the new relay carried records up')
  } finally {
    await stopAll(agents)
  }
})

test('a relay that loses the coordinator hands the role over, and its own records go up through the new relay', async t => {
  const { coordinator, agents } = await site(3)
  try {
    const relay = await agreedRelay(agents)
    relay.reachable = false
    await relay.record()
    const others = agents.filter(agent => agent !== relay)
    const next = await agreedRelay(others)
    await allDelivered(coordinator, agents, 1)
    t.true(coordinator.requests.every(request => request.via !== relay.id), 'nothing reached the coordinator from the cut-off relay')
    t.true(coordinator.requests.some(request => request.via === next.id))
    t.false(relay.site.isRelay)
  } finally {
    await stopAll(agents)
  }
})

test('no agent reaches the coordinator: records wait in the outboxes; once one does, it relays every record, each stored once', async t => {
  const { coordinator, agents } = await site(3)
  try {
    await agreedRelay(agents)
    for (const agent of agents) {
      agent.reachable = false
      agent.reachability.failed()
    }
    await until(() => agents.every(agent => agent.site.relayPeer === undefined), 'no relay')
    for (const agent of agents) for (let index = 0; index < 2; index++) await agent.record()
    await new Promise(resolve => setTimeout(resolve, 300))
    t.is(coordinator.stored.size, 0)
    for (const agent of agents) t.is(await agent.outbox.size(), 2, `${agent.id} keeps its records`)
    agents[1].reachable = true
    agents[1].reachability.succeeded()
    await allDelivered(coordinator, agents, 6)
    t.true(agents[1].site.isRelay)
  } finally {
    await stopAll(agents)
  }
})

test('records offered to a relay that never acknowledges them go up directly after the fallback time', async t => {
  const { coordinator, agents } = await site(2, { directFallbackMs: 400 })
  try {
    const relay = await agreedRelay(agents)
    const other = agents.find(agent => agent !== relay)!
    // A relay that takes records and sends nothing up (it misbehaves, or lost them).
    relay.site.relay.add = () => {}
    await other.record()
    await allDelivered(coordinator, [other], 1)
    t.true(coordinator.requests.some(request => request.via === other.id && !request.receipt), 'the record went up directly')
  } finally {
    await stopAll(agents)
  }
})

test('the relay sends at most a batch\'s worth of records per request', async t => {
  const { coordinator, agents } = await site(2, { relay: { batchIntervalMs: 20, maxBatchRecords: 4 } })
  try {
    const relay = await agreedRelay(agents)
    const other = agents.find(agent => agent !== relay)!
    const before = coordinator.requests.length
    for (let index = 0; index < 10; index++) await other.record()
    await allDelivered(coordinator, agents, 10)
    const requests = coordinator.requests.slice(before)
    t.true(requests.every(request => request.records <= 4))
    t.is(requests.reduce((sum, request) => sum + request.records, 0) >= 10, true)
  } finally {
    await stopAll(agents)
  }
})
