import test from 'ava'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { buildSamplePackage } from '../../coordinator/cli/demo.js'
import { captureTool } from '../helpers/capture.js'
import { startAgentProcess, startCoordinatorProcess, type AgentProcess, type CoordinatorProcess } from '../helpers/processes.js'

/** Debian's browser; `.ci/run` installs it. MESHDEPLOY_TEST_CHROMIUM names another build of it. */
const CHROMIUM = process.env.MESHDEPLOY_TEST_CHROMIUM ?? '/usr/bin/chromium'
const ARTIFACTS = resolve(import.meta.dirname, '../../test-artifacts')
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'
]

const available = existsSync(CHROMIUM)
const inCi = process.env.CI === 'true'
if (!available) {
  process.stderr.write(`\n  the web console's browser test ${inCi ? 'FAILS' : 'is SKIPPED'}: ${CHROMIUM} is not installed (apt-get install -y chromium)\n\n`)
}

const title = 'the web console in Chromium: sign in, upload a package, create a task through the form, watch it succeed live, open the device'
const browserTest = available || inCi ? test : test.skip

browserTest(available ? title : `${title} — ${inCi ? 'FAILED' : 'SKIPPED'}: ${CHROMIUM} is not installed (apt-get install -y chromium)`, async t => {
  if (!available) {
    t.fail(`${CHROMIUM} is required in CI (.ci/run installs it)`)
    return
  }
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-console-'))
  let coordinator: CoordinatorProcess | undefined
  const agents: AgentProcess[] = []
  let browser: BrowserContext | undefined
  let page: Page | undefined
  t.teardown(async () => {
    if (!t.passed && page !== undefined) {
      // What the browser showed when the test failed, for whoever reads the CI log.
      await mkdir(ARTIFACTS, { recursive: true })
      await page.screenshot({ path: join(ARTIFACTS, 'console-failure.png'), fullPage: true }).catch(() => {})
    }
    await browser?.close()
    for (const agent of agents) {
      try { process.kill(agent.child.pid!, 'SIGCONT') } catch {}
      await agent.stop()
    }
    await coordinator?.stop()
    await rm(work, { recursive: true, force: true })
  })

  coordinator = await startCoordinatorProcess()
  const { token } = await coordinator.api.post('/v1/enrollment-tokens', { maxUses: 2 })
  for (const hostname of ['pc-berlin', 'pc-tokyo']) {
    agents.push(await startAgentProcess({ coordinatorUrl: coordinator.url, enrollToken: token, hostname, site: hostname === 'pc-berlin' ? 'berlin' : 'tokyo' }))
  }
  const sample = await buildSamplePackage(work, 1)

  browser = await chromium.launchPersistentContext(join(work, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    locale: 'en-US',
    viewport: { width: 1366, height: 860 }
  })
  page = browser.pages()[0] ?? await browser.newPage()
  const problems: string[] = []
  page.on('pageerror', error => { problems.push(`page error: ${error.message}`) })
  page.on('console', message => {
    // Error answers are checked below, one by one.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) problems.push(`console: ${message.text()}`)
  })
  const refused: string[] = []
  page.on('response', answer => { if (answer.status() >= 400) refused.push(`${answer.request().method()} ${new URL(answer.url()).pathname} ${answer.status()}`) })
  const unauthenticated: string[] = []
  page.on('request', request => {
    const url = new URL(request.url())
    if (url.pathname.startsWith('/v1/') && request.headers().authorization === undefined) unauthenticated.push(url.pathname)
  })
  let loads = 0
  page.on('load', () => { loads++ })

  // Sign in.
  const response = await page.goto(coordinator.url)
  t.regex(response!.headers()['content-security-policy'] ?? '', /script-src 'self'/)
  await page.getByLabel('Operator token').fill(coordinator.adminToken)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { name: 'Distribution records' }).waitFor()
  await page.getByText('Live', { exact: true }).waitFor()
  t.deepEqual(await page.evaluate('[localStorage.length, sessionStorage.getItem("meshdeploy.token") !== null]'), [0, true], 'the token is kept for the session only')

  // Upload a package with its detection rule.
  await page.getByRole('link', { name: 'Software' }).click()
  await page.getByRole('button', { name: 'Upload a package' }).click()
  await page.getByLabel('Name', { exact: true }).fill('sample-app')
  await page.getByLabel('Version', { exact: true }).fill(sample.version)
  await page.getByLabel('Detect by').selectOption('file')
  await page.getByLabel('File path').fill('/opt/meshdeploy-demo/payload.bin')
  await page.getByLabel('File SHA-256').fill(sample.payloadSha256)
  await page.getByLabel('Package file').setInputFiles(sample.file)
  await page.getByRole('button', { name: 'Upload', exact: true }).click()
  const packageRow = page.locator('tr', { hasText: 'sample-app' })
  await packageRow.waitFor()

  // A capture package shows what it changes before anyone distributes it.
  await coordinator.api.uploadPackage((await captureTool(join(work, 'capture'))).packageFile, { name: 'captured-tool', version: '2.0' })
  await page.getByRole('link', { name: 'Tasks' }).or(page.getByRole('link', { name: 'Distribution records' })).click()
  await page.getByRole('link', { name: 'Software' }).click()
  const captureRow = page.locator('tr', { hasText: 'captured-tool' })
  await captureRow.getByText('What it changes: 6 added, 1 modified, 1 removed, 1 mode/owner only').click()
  await captureRow.getByRole('cell', { name: '/opt/tool', exact: true }).waitFor()
  await captureRow.getByText('/etc/tool/unused.conf').waitFor()

  // The task form: the server's own messages appear next to the fields they concern.
  await packageRow.getByRole('button', { name: 'Distribute' }).click()
  await page.getByRole('heading', { name: 'New task' }).waitFor()
  await page.getByLabel('Destination folder').fill('relative/folder')
  await page.getByRole('button', { name: 'Create task' }).click()
  const destinationError = page.locator('.field', { has: page.getByLabel('Destination folder') }).locator('.field-error')
  await destinationError.waitFor()
  t.is(await destinationError.textContent(), 'must be an absolute path')
  t.is(await page.getByLabel('Destination folder').getAttribute('aria-invalid'), 'true')
  await page.getByLabel('Destination folder').fill('')

  // While the agents are stopped the task cannot progress: what changes later comes from the event stream.
  for (const agent of agents) process.kill(agent.child.pid!, 'SIGSTOP')
  await page.getByLabel('pc-berlin').check()
  await page.getByLabel('pc-tokyo').check()
  await page.getByLabel('Attempts per device').fill('1')
  await page.getByRole('button', { name: 'Create task' }).click()
  await page.waitForURL(/#\/tasks\/task-/, { waitUntil: 'commit' })
  const taskId = decodeURIComponent(page.url().split('#/tasks/')[1])

  await page.getByRole('link', { name: 'Distribution records' }).click()
  const taskRow = page.locator(`tr[data-task="${taskId}"]`)
  await taskRow.getByText('0 of 2 settled').waitFor()
  for (const agent of agents) process.kill(agent.child.pid!, 'SIGCONT')
  await taskRow.getByText('2 of 2 settled').waitFor({ timeout: 120_000 })
  t.is(await taskRow.locator('progress').getAttribute('value'), '100')
  t.regex(await taskRow.locator('.counts').innerText(), /succeeded\s+2/)
  t.is(loads, 1, 'no page reload: the row was updated from /v1/events')
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'console-distribution-records.png'), fullPage: true })

  // The task's device rows, and a device's page with its history.
  await taskRow.getByRole('link').first().click()
  await page.locator('tr[data-device][data-state="succeeded"]').nth(1).waitFor()
  await page.getByRole('link', { name: 'pc-tokyo' }).click()
  await page.getByRole('heading', { name: 'pc-tokyo' }).waitFor()
  const history = page.locator(`tr[data-task="${taskId}"]`)
  await history.waitFor()
  t.is(await history.getAttribute('data-state'), 'succeeded')
  t.regex(await page.locator('.properties').innerText(), /tokyo/)
  await page.screenshot({ path: join(ARTIFACTS, 'console-device.png'), fullPage: true })

  // The language follows the switch; every string comes from the catalogues.
  await page.getByLabel('Language').selectOption('zh')
  await page.getByRole('link', { name: '软件' }).waitFor()
  t.is(await page.evaluate('document.documentElement.lang'), 'zh-CN')

  t.is(loads, 1)
  t.deepEqual(unauthenticated, [], 'every API call carries the token')
  t.deepEqual(problems, [], 'no script errors and no Content-Security-Policy violations')
  t.deepEqual(refused, ['POST /v1/tasks 400'], 'the only error answer is the form refused on purpose')
})
