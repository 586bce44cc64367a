import test from 'ava'
import type { Command } from 'commander'
import { operatorProgram } from '../../coordinator/cli/program.js'
import { agentCommand } from '../../agent/cli.js'
import { COMMAND_OF_ROUTE } from '../../coordinator/cli/route-coverage.js'
import { addExamples } from '../../coordinator/cli/examples.js'
import { openTestCoordinator } from '../helpers/coordinator.js'

function commandPaths (root: Command): Set<string> {
  const out = new Set<string>()
  const walk = (command: Command, prefix: string): void => {
    for (const child of command.commands) {
      const path = prefix === '' ? child.name() : `${prefix} ${child.name()}`
      out.add(path)
      walk(child, path)
    }
  }
  walk(root, '')
  return out
}

test('every API operation has a CLI command, and every command named for one exists', async t => {
  const c = await openTestCoordinator()
  const routes = c.app.routes.specs.map(spec => `${spec.method.toUpperCase()} ${spec.path}`)
  await c.close()
  const program = operatorProgram()
  program.addCommand(agentCommand())
  const commands = commandPaths(program)
  t.deepEqual(routes.filter(route => COMMAND_OF_ROUTE[route] === undefined), [], 'routes without a command')
  t.deepEqual(Object.entries(COMMAND_OF_ROUTE).filter(([, command]) => !commands.has(command)).map(([route, command]) => `${route} → ${command}`), [], 'commands that do not exist')
  t.deepEqual(Object.keys(COMMAND_OF_ROUTE).filter(route => !routes.includes(route)), [], 'routes the API no longer has')
})

test('every command has a description, and every runnable command examples in its help', t => {
  const program = operatorProgram()
  program.addCommand(agentCommand())
  addExamples(program)
  const undescribed: string[] = []
  const withoutExamples: string[] = []
  const walk = (command: Command, prefix: string): void => {
    for (const child of command.commands) {
      const path = `${prefix} ${child.name()}`.trim()
      if ((child as any)._hidden === true) continue
      if (child.description() === '') undescribed.push(path)
      if (child.commands.length === 0) {
        let help = ''
        child.configureOutput({ writeOut: text => { help += text } })
        child.outputHelp()
        if (!/Examples?:/.test(help)) withoutExamples.push(path)
      }
      walk(child, path)
    }
  }
  walk(program, '')
  t.deepEqual(undescribed, [])
  t.deepEqual(withoutExamples, [])
})
