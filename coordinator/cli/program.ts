import { Command } from 'commander'
import { coordinatorCommand } from './commands/coordinator.js'
import { deviceCommand } from './commands/devices.js'
import { packageCommand } from './commands/packages.js'
import { boundaryCommand, siteCommand } from './commands/sites.js'
import { taskCommand } from './commands/tasks.js'
import { enrollmentTokenCommand } from './commands/tokens.js'
import { operatorTokenCommand } from './commands/operator-tokens.js'
import { auditCommand } from './commands/audit.js'
import { keyCommand } from './commands/keys.js'
import { publisherCommand } from './commands/publishers.js'
import { requestCommand } from './commands/requests.js'
import { userCommand } from './commands/users.js'
import { settingsCommand } from './commands/settings.js'
import { runDemo } from './demo.js'
import { positiveInteger } from './context.js'
import { completionCommands } from './completion.js'
import { systemCommands } from './commands/system.js'
import { credentialCommand } from './commands/credentials.js'
import { pushCommand } from './commands/push.js'
import { windowCommand } from './commands/windows.js'
import { captureCommand } from './commands/capture.js'

export const CLI_VERSION = '0.1.0'

/** The operator's commands; the agent's are added by the entry point. */
export function operatorProgram (): Command {
  const program = new Command('meshdeploy')
    .description('peer-to-peer assisted software distribution: a package crosses each site\'s WAN link once')
    .version(CLI_VERSION)
    // Options of the program only before a command, so that `package add --version 2.0` is the package's version.
    .enablePositionalOptions()
    .showHelpAfterError()
    .addHelpText('after', `
Environment:
  MESHDEPLOY_URL     coordinator URL (default http://127.0.0.1:8650)
  MESHDEPLOY_TOKEN   operator token
  MESHDEPLOY_CA      CA certificate file (PEM) the coordinator's HTTPS certificate must chain to
  MESHDEPLOY_PIN_SHA256  SHA-256 fingerprint of the coordinator's certificate, instead of or besides a CA
  MESHDEPLOY_INSECURE_HTTP=1  allow http:// to another machine

Exit codes: 0 ok, 1 a watched task had failures, 2 usage, 3 refused by the API, 4 coordinator unreachable or failing.`)
  program.addCommand(coordinatorCommand())
  program.addCommand(packageCommand())
  program.addCommand(captureCommand())
  program.addCommand(taskCommand())
  program.addCommand(deviceCommand())
  program.addCommand(siteCommand())
  program.addCommand(boundaryCommand())
  program.addCommand(windowCommand())
  program.addCommand(enrollmentTokenCommand())
  program.addCommand(operatorTokenCommand())
  program.addCommand(auditCommand())
  program.addCommand(keyCommand())
  program.addCommand(publisherCommand())
  program.addCommand(requestCommand())
  program.addCommand(userCommand())
  program.addCommand(settingsCommand())
  program.addCommand(credentialCommand())
  program.addCommand(pushCommand())
  for (const command of systemCommands()) program.addCommand(command)
  const [completion, complete] = completionCommands()
  program.addCommand(completion)
  program.addCommand(complete, { hidden: true })
  program.command('demo')
    .description('run a coordinator and agents on loopback and deploy a real package to them, with live progress')
    .option('--agents <n>', 'agents', positiveInteger, 6)
    .option('--sites <n>', 'sites the agents are spread over', positiveInteger, 2)
    .option('--payload-mib <n>', 'size of the sample payload, MiB', positiveInteger, 32)
    .option('--keep', 'keep the temporary folder (logs, data) afterwards')
    .action(async options => {
      process.exitCode = await runDemo({ agents: options.agents, sites: options.sites, payloadMiB: options.payloadMib, keep: options.keep === true })
    })
  return program
}
