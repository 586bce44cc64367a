import test from 'ava'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { startCoordinatorProcess, type CoordinatorProcess } from '../helpers/processes.js'

/** Debian's browser; `.ci/run` installs it. MESHDEPLOY_TEST_CHROMIUM names another build of it. */
const CHROMIUM = process.env.MESHDEPLOY_TEST_CHROMIUM ?? '/usr/bin/chromium'
const ARTIFACTS = resolve(import.meta.dirname, '../../test-artifacts')
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic']

const available = existsSync(CHROMIUM)
const inCi = process.env.CI === 'true'
if (!available) process.stderr.write(`\n  the push installs console test ${inCi ? 'FAILS' : 'is SKIPPED'}: ${CHROMIUM} is not installed (apt-get install -y chromium)\n\n`)
const title = 'the console\'s push installs page: credentials ticked in order, a package pushed to a host that does not answer, its attempt and reason on the push\'s page'
const browserTest = available || inCi ? test : test.skip

browserTest(available ? title : `${title} — ${inCi ? 'FAILED' : 'SKIPPED'}: ${CHROMIUM} is not installed`, async t => {
  if (!available) {
    t.fail(`${CHROMIUM} is required in CI (.ci/run installs it)`)
    return
  }
  const work = await mkdtemp(join(tmpdir(), 'md-e2e-push-console-'))
  let coordinator: CoordinatorProcess | undefined
  let browser: BrowserContext | undefined
  let page: Page | undefined
  t.teardown(async () => {
    if (!t.passed && page !== undefined) {
      await mkdir(ARTIFACTS, { recursive: true })
      await page.screenshot({ path: join(ARTIFACTS, 'push-console-failure.png'), fullPage: true }).catch(() => {})
    }
    await browser?.close()
    await coordinator?.stop()
    await rm(work, { recursive: true, force: true })
  })
  coordinator = await startCoordinatorProcess()
  const api = coordinator.api
  await api.post('/v1/credentials', { type: 'account', name: 'branch-admin', user: 'admin', password: 'not shown anywhere' })
  await api.post('/v1/credentials', { type: 'account', name: 'helpdesk', user: 'helpdesk', password: 'not shown either' })
  const script = join(work, 'setup.sh')
  await writeFile(script, '#!/bin/sh\necho hello\n')
  await api.uploadPackage(script, { name: 'hello-tool', version: '1.0' })

  browser = await chromium.launchPersistentContext(join(work, 'profile'), { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, locale: 'en-US', viewport: { width: 1366, height: 900 } })
  page = browser.pages()[0] ?? await browser.newPage()
  const problems: string[] = []
  page.on('pageerror', error => { problems.push(`page error: ${error.message}`) })
  await page.goto(coordinator.url)
  await page.getByLabel('Operator token').fill(coordinator.adminToken)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { name: 'Distribution records' }).waitFor()

  await page.getByRole('link', { name: 'Push installs' }).click()
  await page.getByRole('heading', { name: 'Push installs' }).waitFor()
  await page.getByText('No push installs yet.').waitFor()
  await page.getByLabel('Hosts', { exact: true }).fill('127.0.0.1:1')
  // Ticked in this order: helpdesk is tried first.
  await page.getByLabel(/^helpdesk/).check()
  await page.getByLabel(/^branch-admin/).check()
  t.is(await page.locator('label.check', { hasText: 'helpdesk' }).locator('[data-order]').innerText(), '1')
  t.is(await page.locator('label.check', { hasText: 'branch-admin' }).locator('[data-order]').innerText(), '2')
  await page.getByLabel('A package').check()
  await page.getByLabel('Package', { exact: true }).selectOption({ label: 'hello-tool 1.0 (shell)' })
  await page.getByLabel('Maximum install attempts').fill('1')
  await page.getByRole('button', { name: 'Start the push install' }).click()
  await page.waitForURL(/#\/push\/push-/, { waitUntil: 'commit' })
  const pushId = decodeURIComponent(page.url().split('#/push/')[1])

  const row = page.locator('tr[data-host="127.0.0.1:1"][data-state="failed"]')
  await row.waitFor({ timeout: 60_000 })
  await row.getByText('One attempt').click()
  await row.locator('li[data-reason="unreachable"]').waitFor()
  t.regex(await row.locator('li[data-reason="unreachable"]').innerText(), /unreachable[\s\S]*127\.0\.0\.1:1 is unreachable: ECONNREFUSED/)
  await page.getByRole('button', { name: 'Run again for all hosts' }).waitFor()
  await mkdir(ARTIFACTS, { recursive: true })
  await page.screenshot({ path: join(ARTIFACTS, 'console-push-install.png'), fullPage: true })

  const push = await api.get(`/v1/push-installs/${pushId}`)
  t.deepEqual(push.credentialIds.length, 2)
  t.is((await api.get('/v1/credentials')).credentials.find((entry: any) => entry.id === push.credentialIds[0]).name, 'helpdesk', 'the order ticked is the order tried')
  t.is(push.hosts[0].attempts[0].reason, 'unreachable')
  await page.getByRole('link', { name: 'Push installs' }).click()
  await page.locator(`tr[data-push="${pushId}"][data-status="finished"]`).waitFor()
  t.deepEqual(problems, [])
})
