import test from 'ava'
import { makePackage, stubSite } from '../helpers/mesh-stub.js'
import { TokenBucket } from '../../agent/download/token-bucket.js'

/** Every node of the site knows every other one (the peer book), as enrolled devices of one site do. */
const knowEachOther = (site: Awaited<ReturnType<typeof stubSite>>): string[] => {
  const ids = site.nodes.map(node => node.id)
  for (const node of site.nodes) {
    node.fetcher['init'].knownPeers = () => ids.length - 1
    node.fetcher['init'].sitePeers = () => ids.filter(id => id !== node.id)
  }
  return ids
}

const fetch = (node: { fetcher: import('../../agent/download/mesh-fetcher.js').MeshFetcher }, pkg: import('../../protocol/index.js').ManifestPackage, signal = AbortSignal.timeout(30_000)) =>
  node.fetcher.fetchPackage({ taskId: 'task', pkg, signal })

test('five downloaders of one site fetch about one copy from the origin and the rest from each other', async t => {
  const { pkg, chunks } = makePackage(200, 16 * 1024)
  const site = await stubSite(5, chunks)
  try {
    site.hub.connectAll()
    const results = await Promise.all(site.nodes.map(async node => await fetch(node, pkg)))
    for (const [index, result] of results.entries()) {
      t.is(result.chunksDone, 200, `node ${index} holds every chunk`)
      t.is(result.bytesFromPeers + result.bytesFromOrigin, pkg.sizeBytes - (result.bytesDone - result.bytesFromPeers - result.bytesFromOrigin))
      for (const sha256 of pkg.chunks) t.true(site.nodes[index].cache.has(sha256))
    }
    const fromOrigin = results.reduce((sum, result) => sum + result.bytesFromOrigin, 0)
    t.is(fromOrigin, site.origin.bytesServed)
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.02, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
    t.true(results.every(result => result.bytesFromOrigin > 0), 'the origin work is spread over the downloaders')
  } finally {
    await site.close()
  }
})

test('a peer that serves corrupt chunks is disconnected, then banned, and everyone else completes', async t => {
  const { pkg, chunks } = makePackage(60, 16 * 1024)
  const site = await stubSite(4, chunks)
  try {
    const [bad, ...good] = site.nodes
    await fetch(bad, pkg)
    bad.network.corrupt = true
    const banned: string[] = []
    for (const node of good) node.fetcher['init'].onBansChanged = () => { banned.push(node.id) }
    site.hub.connectAll()
    // The corrupt peer comes back after every disconnection, as discovery would redial it.
    const redial = setInterval(() => { for (const node of good) site.hub.connect(bad.id, node.id) }, 20)
    const results = await Promise.all(good.map(async node => await fetch(node, pkg)))
    clearInterval(redial)
    for (const result of results) t.is(result.chunksDone, 60)
    t.true(banned.length >= 1, 'at least one downloader banned the corrupt peer')
    for (const node of good) for (const sha256 of pkg.chunks) t.true(node.cache.has(sha256))
  } finally {
    await site.close()
  }
})

test('a serving peer that leaves mid-transfer costs only its requests', async t => {
  const { pkg, chunks } = makePackage(80, 16 * 1024)
  const site = await stubSite(3, chunks)
  try {
    const [seed, a, b] = site.nodes
    await fetch(seed, pkg)
    site.hub.connectAll()
    let stored = 0
    const slow = new TokenBucket({ bytesPerSecond: 2 * 1024 * 1024 })
    const runs = [a, b].map(async node => await node.fetcher.fetchPackage({
      taskId: 'task', pkg, bucket: slow, signal: AbortSignal.timeout(30_000),
      onProgress: progress => {
        stored = Math.max(stored, progress.chunksDone)
        if (stored >= 20 && site.hub.nodes.has(seed.id)) {
          site.hub.nodes.delete(seed.id)
          site.hub.disconnect(seed.id, a.id)
          site.hub.disconnect(seed.id, b.id)
        }
      }
    }))
    const results = await Promise.all(runs)
    for (const result of results) {
      t.is(result.chunksDone, 80)
      t.true(result.bytesFromPeers > 0)
    }
  } finally {
    await site.close()
  }
})

test('a silent peer stalls only its requests; the others go elsewhere', async t => {
  const { pkg, chunks } = makePackage(30, 16 * 1024)
  const site = await stubSite(3, chunks)
  try {
    const [silent, seed, downloader] = site.nodes
    await fetch(silent, pkg)
    await fetch(seed, pkg)
    silent.network.silent = true
    site.hub.connectAll()
    const result = await fetch(downloader, pkg)
    t.is(result.chunksDone, 30)
    t.is(result.bytesFromOrigin, 0)
  } finally {
    await site.close()
  }
})

test('an origin that keeps failing a chunk fails the download with the reason', async t => {
  const { pkg, chunks } = makePackage(3, 16 * 1024)
  const site = await stubSite(1, chunks)
  try {
    site.origin.failuresLeft = 100
    const error = await t.throwsAsync(fetch(site.nodes[0], pkg))
    t.is(error?.name, 'ChunkUnavailableError')
    t.regex(error!.message, /failed its hash check 3 times \(HashMismatchError/)
  } finally {
    await site.close()
  }
})

test('a seeder answers interest from its cache; a chunk already held is not fetched again', async t => {
  const { pkg, chunks } = makePackage(10, 16 * 1024)
  const site = await stubSite(2, chunks)
  try {
    const [seed, downloader] = site.nodes
    await fetch(seed, pkg)
    const servedBefore = site.origin.bytesServed
    site.hub.connectAll()
    const result = await fetch(downloader, pkg)
    t.is(result.bytesFromPeers, pkg.sizeBytes)
    t.is(site.origin.bytesServed, servedBefore)
    const again = await fetch(downloader, pkg)
    t.is(again.bytesFromPeers + again.bytesFromOrigin, 0)
    t.is(again.chunksDone, 10)
  } finally {
    await site.close()
  }
})

test('an origin out of reach fails nothing while a site peer holds the chunks; with nobody holding them the download fails for that reason', async t => {
  const { pkg, chunks } = makePackage(40, 16 * 1024)
  const site = await stubSite(3, chunks)
  try {
    const [seed, cut, alone] = site.nodes
    await fetch(seed, pkg)
    site.origin.unreachable = true
    const served = site.origin.bytesServed
    // The site's peers find each other only after the first tries at the origin failed.
    const download = fetch(cut, pkg)
    while (site.origin.unreachableFailures === 0) await new Promise(resolve => setTimeout(resolve, 5))
    site.hub.connect(seed.id, cut.id)
    const result = await download
    t.is(result.chunksDone, 40)
    t.is(result.bytesFromPeers, pkg.sizeBytes)
    t.is(site.origin.bytesServed, served, 'nothing came from the origin')
    const error = await t.throwsAsync(fetch(alone, pkg))
    t.is(error?.name, 'ChunkUnavailableError')
    t.is((error as Error & { cause?: Error }).cause?.name, 'CoordinatorUnreachableError')
  } finally {
    await site.close()
  }
})

test('the gather before origin fetches ends as soon as every connected peer has answered', async t => {
  const { pkg, chunks } = makePackage(40, 16 * 1024)
  // A gather far longer than the fetch's own deadline: only its early end lets these downloads finish.
  const site = await stubSite(4, chunks, { picker: { gatherMs: 10 * 60_000, electionTimeoutMs: 10 * 60_000 } })
  try {
    const [bystander, ...downloaders] = site.nodes
    site.hub.connectAll()
    const results = await Promise.all(downloaders.map(async node => await fetch(node, pkg, AbortSignal.timeout(60_000))))
    for (const result of results) t.is(result.chunksDone, 40)
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.02, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
    t.false(bystander.cache.has(pkg.chunks[0]), 'the peer that does not download answered with an empty bitfield and fetched nothing')
  } finally {
    await site.close()
  }
})

test('a downloader that joins late learns what the others already hold and fetch: the origin still serves one copy', async t => {
  const { pkg, chunks } = makePackage(80, 16 * 1024)
  const site = await stubSite(3, chunks)
  try {
    const [early, other, late] = site.nodes
    site.hub.connectAll()
    let lateRun: Promise<unknown> | undefined
    const slow = new TokenBucket({ bytesPerSecond: 1024 * 1024 })
    const earlyRuns = [early, other].map(async node => await node.fetcher.fetchPackage({
      taskId: 'task', pkg, bucket: slow, signal: AbortSignal.timeout(30_000),
      onProgress: progress => {
        // The late one starts once half the package is in the site, while the others still download.
        if (lateRun === undefined && progress.chunksDone >= 20) lateRun = fetch(late, pkg)
      }
    }))
    await Promise.all(earlyRuns)
    const result = await lateRun as Awaited<ReturnType<typeof fetch>>
    t.is(result.chunksDone, 80)
    t.true(result.bytesFromPeers >= pkg.sizeBytes / 2, `the late one took ${result.bytesFromPeers} bytes from its peers`)
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.02, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
  } finally {
    await site.close()
  }
})

test('a site of 12 downloaders past the origin-fetcher threshold: only the package\'s fetchers ask the origin, about one copy in all', async t => {
  const { isOriginFetcher } = await import('../../agent/download/election.js')
  const { pkg, chunks } = makePackage(120, 16 * 1024)
  // The agent's own gather: a loaded machine must not end it before the fetchers heard each other.
  const site = await stubSite(12, chunks, { picker: { gatherMs: 2000, electionTimeoutMs: 5000, originFetchers: 4 } })
  try {
    const ids = knowEachOther(site)
    site.hub.connectAll()
    const fetchers = ids.filter(id => isOriginFetcher(pkg.id, id, 4, 12))
    t.true(fetchers.length > 0 && fetchers.length < 12, `${fetchers.length} fetchers`)
    const results = await Promise.all(site.nodes.map(async node => await fetch(node, pkg)))
    for (const result of results) t.is(result.chunksDone, 120)
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.05, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
    for (const [index, result] of results.entries()) {
      if (!fetchers.includes(ids[index])) t.is(result.bytesFromOrigin, 0, `${ids[index]} is no fetcher and asked the origin for nothing`)
    }
    t.is(site.nodes[0].fetcher.downloaders(pkg.id), 12, 'every connected peer took part')
  } finally {
    await site.close()
  }
})

test('a task for 3 devices of a site of 12: they count 3 downloaders and elect among themselves as a small site does, with no wait for fetchers that do not download', async t => {
  const { pkg, chunks } = makePackage(60, 16 * 1024)
  const site = await stubSite(12, chunks, { picker: { gatherMs: 300, electionTimeoutMs: 20_000, originFetchers: 4 } })
  try {
    knowEachOther(site)
    site.hub.connectAll()
    const started = Date.now()
    const results = await Promise.all(site.nodes.slice(0, 3).map(async node => await fetch(node, pkg)))
    for (const result of results) t.is(result.chunksDone, 60)
    t.true(Date.now() - started < 15_000, 'nobody waited out the election timeout')
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.02, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
  } finally {
    await site.close()
  }
})

test('a device whose process stalls past the gather reads what arrived meanwhile before it elects: the origin still serves one copy', async t => {
  const { pkg, chunks } = makePackage(60, 16 * 1024)
  const site = await stubSite(12, chunks, { picker: { gatherMs: 200, electionTimeoutMs: 20_000, originFetchers: 4 } })
  try {
    knowEachOther(site)
    site.hub.connectAll()
    const runs = site.nodes.slice(0, 3).map(async node => await fetch(node, pkg))
    // The process is held up for twice the gather before any message of the site is read.
    const stallUntil = Date.now() + 400
    while (Date.now() < stallUntil) { /* a busy machine */ }
    const results = await Promise.all(runs)
    for (const result of results) t.is(result.chunksDone, 60)
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.02, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
  } finally {
    await site.close()
  }
})

test('two devices that started the same origin chunks before they saw each other: the one each chunk\'s election passes over gives its fetch up', async t => {
  const { pkg, chunks } = makePackage(40, 16 * 1024)
  const site = await stubSite(2, chunks)
  try {
    const [a, b] = site.nodes
    // Alone, each elects itself for every chunk and starts the first ones; the origin is slow enough for them to meet mid-fetch.
    site.origin.latencyMs = 100
    const runs = [a, b].map(async node => await fetch(node, pkg))
    const originRequests = (node: typeof a): number => [...node.fetcher['swarms'].get(pkg.id)?.swarm['running'].values() ?? []].filter(({ request }) => request.source.kind === 'origin').length
    while (originRequests(a) === 0 || originRequests(b) === 0) await new Promise(resolve => setImmediate(resolve))
    site.hub.connect(a.id, b.id)
    const results = await Promise.all(runs)
    for (const result of results) t.is(result.chunksDone, 40)
    t.true(results.every(result => result.bytesFromPeers > 0), 'each took chunks from the other')
    t.true(site.origin.bytesServed <= pkg.sizeBytes * 1.02, `origin served ${site.origin.bytesServed / pkg.sizeBytes} copies`)
  } finally {
    await site.close()
  }
})
