import test from 'ava'
import { AssignmentDispatcher, type HeldRequest, type WakeScope } from '../../coordinator/agents/dispatcher.js'
import { DeviceRegistry } from '../../coordinator/devices/registry.js'
import type { DeviceRecord } from '../../coordinator/store/types.js'

interface Fleet {
  dispatcher: AssignmentDispatcher
  woken: string[]
  requests: Map<string, HeldRequest>
  release: Map<string, () => void>
}

/** Held requests of a-1, a-2 (site A, group g1), b-1 (site B, group g1, g2), b-cache (site B cache), c-1 (site C); a-1 samples a-2, b-1 samples b-cache. */
function fleet (): Fleet {
  const dispatcher = new AssignmentDispatcher()
  const woken: string[] = []
  const requests = new Map<string, HeldRequest>()
  const release = new Map<string, () => void>()
  const hold = (deviceId: string, site: string, groups: string[], sample: string[], siteCache = false): void => {
    const request: HeldRequest = { deviceId, site, groups, sample, siteCache, wake: () => { woken.push(deviceId) } }
    requests.set(deviceId, request)
    release.set(deviceId, dispatcher.hold(request))
  }
  hold('a-1', 'A', ['g1'], ['a-2'])
  hold('a-2', 'A', ['g1'], ['a-1'])
  hold('b-1', 'B', ['g1', 'g2'], ['b-cache'])
  hold('b-cache', 'B', [], ['b-1'], true)
  hold('c-1', 'C', [], [])
  return { dispatcher, woken, requests, release }
}

const table: Array<[string, WakeScope, string[]]> = [
  ['a release of two devices', { deviceIds: ['a-1', 'c-1'] }, ['a-1', 'c-1']],
  ['a window of site A', { sites: ['A'] }, ['a-1', 'a-2']],
  ['a window of group g2', { groups: ['g2'] }, ['b-1']],
  ['a window of group g1 and site B (each once)', { groups: ['g1'], sites: ['B'] }, ['a-1', 'a-2', 'b-1', 'b-cache']],
  ['new addresses of b-cache: the requests that sampled it', { sampling: ['b-cache'] }, ['b-1']],
  ['a task change: site caches', { siteCaches: true }, ['b-cache']],
  ['a key rotation: everyone', { all: true }, ['a-1', 'a-2', 'b-1', 'b-cache', 'c-1']],
  ['a device with no held request', { deviceIds: ['z-9'], sites: ['Z'] }, []],
  ['nothing', {}, []]
]

for (const [name, scope, expected] of table) {
  test(`dispatcher: ${name} wakes ${expected.length === 0 ? 'nobody' : expected.join(', ')}`, t => {
    const { dispatcher, woken } = fleet()
    t.is(dispatcher.wake(scope), expected.length)
    t.deepEqual(woken.sort(), expected)
  })
}

test('dispatcher: a released request is woken no more; a resampled one follows its new sample', t => {
  const { dispatcher, woken, requests, release } = fleet()
  release.get('a-1')!()
  release.get('a-1')!()
  t.is(dispatcher.size, 4)
  t.false(dispatcher.isHeld('a-1'))
  dispatcher.wake({ sites: ['A'], sampling: ['a-2'] })
  t.deepEqual(woken, ['a-2'])
  woken.length = 0
  dispatcher.resample(requests.get('b-1')!, ['c-1'])
  dispatcher.wake({ sampling: ['b-cache'] })
  t.deepEqual(woken, [])
  dispatcher.wake({ sampling: ['c-1'] })
  t.deepEqual(woken, ['b-1'])
  t.deepEqual([...dispatcher.heldDevices()].sort(), ['a-2', 'b-1', 'b-cache', 'c-1'])
})

function device (id: string, site: string, init: Partial<DeviceRecord> = {}): DeviceRecord {
  return {
    id,
    hostname: `host-${id}`,
    publicKey: id,
    peerId: `peer-${id}`,
    platform: 'linux',
    arch: 'x64',
    site,
    groups: [],
    status: 'active',
    enrolledAt: '2026-01-01T00:00:00.000Z',
    peerAddresses: [`/ip4/10.0.0.1/tcp/8651/p2p/peer-${id}`],
    ...init
  }
}

test('registry: a sample is bounded, names the site caches, prefers online peers, leaves out the device itself and other sites', t => {
  const registry = new DeviceRegistry()
  for (let i = 0; i < 500; i++) registry.load(device(`d${i}`, 'big'))
  registry.load(device('cache', 'big', { siteCache: true }))
  registry.load(device('quiet', 'big', { peerAddresses: [] }))
  registry.load(device('blocked', 'big', { status: 'blocked' }))
  for (let i = 0; i < 5; i++) registry.load(device(`s${i}`, 'small'))
  const online = (id: string): boolean => Number(id.slice(1)) % 2 === 0
  const sample = registry.sampleFor({ id: 'd7', site: 'big' }, { size: 32, isOnline: online })
  t.is(sample.length, 32)
  t.true(sample.some(peer => peer.id === 'cache'))
  t.false(sample.some(peer => ['d7', 'quiet', 'blocked'].includes(peer.id) || peer.site !== 'big'))
  t.true(sample.filter(peer => peer.id !== 'cache').every(peer => online(peer.id)), 'online peers fill the sample while there are enough nearby')
  t.deepEqual(registry.sampleFor({ id: 'd7', site: 'big' }, { size: 32, isOnline: online }), sample, 'the same while nothing changes')
  t.notDeepEqual(registry.sampleFor({ id: 'd8', site: 'big' }, { size: 32 }).map(peer => peer.id), sample.map(peer => peer.id), 'each device sees another slice')
  t.notDeepEqual(registry.sampleFor({ id: 'd7', site: 'big' }, { size: 32, epoch: 1 }).map(peer => peer.id), registry.sampleFor({ id: 'd7', site: 'big' }, { size: 32, epoch: 2 }).map(peer => peer.id), 'samples rotate')
  t.deepEqual(registry.sampleFor({ id: 's0', site: 'small' }).map(peer => peer.id), ['s1', 's2', 's3', 's4'], 'a small site: everyone else')
  t.is(registry.siteSize('big'), 502)
  t.is(registry.sitePeerCount('big'), 501)
})

test('registry: site versions and change events follow what samples are drawn from', t => {
  const registry = new DeviceRegistry()
  const changes: Array<[string | undefined, string | undefined]> = []
  registry.on('changed', (previous, next) => { changes.push([previous?.site, next?.site]) })
  registry.put(device('x', 'A', { groups: ['g'] }))
  const version = registry.siteVersion('A')
  registry.put(device('x', 'A', { groups: ['g'], lastSeenAt: '2026-01-02T00:00:00.000Z' }))
  t.is(registry.siteVersion('A'), version, 'a contact changes no sample')
  t.true(registry.siteHasGroup('A', 'g'))
  registry.put(device('x', 'B', { groups: ['g'] }))
  t.true(registry.siteVersion('A') > version)
  t.false(registry.siteHasGroup('A', 'g'))
  t.true(registry.siteHasGroup('B', 'g'))
  registry.put(device('x', 'B', { status: 'retired' }))
  t.is(registry.siteSize('B'), 0)
  t.deepEqual(registry.idsOfHostname('HOST-X'), [])
  t.deepEqual(changes, [[undefined, 'A'], ['A', 'A'], ['A', 'B'], ['B', undefined]])
})
