// Drives the official @codesandbox/sdk against Corral's /csb facade, unchanged: the SDK reads
// CSB_BASE_URL and CSB_API_KEY from the environment. OTHER_SANDBOX_ID names another team's
// sandbox, which must look like one that does not exist.
//
// Prints one JSON summary line and exits non-zero when any step fails.
import { CodeSandbox, VMTier } from "@codesandbox/sdk";

const steps = {};
const sdk = new CodeSandbox();

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function failure(promise) {
  try {
    await promise;
  } catch (error) {
    return { message: String(error.message ?? error), type: error.type ?? null };
  }
  throw new Error("expected the call to fail");
}

async function main() {
  const sandbox = await sdk.sandboxes.create({ title: "acc", vmTier: VMTier.Nano });
  steps.create = { id: sandbox.id, bootupType: sandbox.bootupType };
  check(sandbox.bootupType === "FORK", `create booted ${sandbox.bootupType}`);

  await sandbox.updateTier(VMTier.Small);
  await sandbox.updateHibernationTimeout(600);
  steps.updated = true;

  const session = await sandbox.createSession({ id: "alice", permission: "read" });
  check(session.sessionId === "alice", "session id");
  check(session.pitcherToken && session.pitcherURL, "session token and url");
  steps.session = { sessionId: session.sessionId, sandboxId: session.sandboxId };

  const running = await sdk.sandboxes.listRunning();
  steps.listRunning = {
    count: running.concurrentVmCount,
    limit: running.concurrentVmLimit,
    ids: running.vms.map((vm) => vm.id),
    creditBasis: running.vms.map((vm) => vm.creditBasis),
    // The SDK parses epoch timestamps; a sane year shows it understood ours.
    startedYear: running.vms.map((vm) => vm.sessionStartedAt?.getUTCFullYear() ?? null),
  };

  await sdk.sandboxes.hibernate(sandbox.id);
  const resumed = await sdk.sandboxes.resume(sandbox.id);
  steps.resume = { bootupType: resumed.bootupType };

  const restarted = await sdk.sandboxes.restart(sandbox.id);
  steps.restart = { bootupType: restarted.bootupType };

  await sdk.sandboxes.shutdown(sandbox.id);
  // Hibernating a stopped sandbox answers success, so a second call does not throw.
  await sdk.sandboxes.hibernate(sandbox.id);
  steps.shutdown = true;

  const info = await sdk.sandboxes.get(sandbox.id);
  steps.get = { id: info.id, title: info.title, tags: info.tags, privacy: info.privacy };

  const doomed = await sdk.sandboxes.create({ title: "doomed" });
  await sdk.sandboxes.delete(doomed.id);
  const gone = await failure(sdk.sandboxes.get(doomed.id));
  steps.delete = { id: doomed.id, afterwards: gone.message };

  const listed = await sdk.sandboxes.list({ limit: 500 });
  steps.list = {
    count: listed.sandboxes.length,
    totalCount: listed.totalCount,
    unique: new Set(listed.sandboxes.map((s) => s.id)).size,
    includesCreated: listed.sandboxes.some((s) => s.id === sandbox.id),
    includesDeleted: listed.sandboxes.some((s) => s.id === doomed.id),
  };

  const other = process.env.OTHER_SANDBOX_ID;
  steps.otherTeam = {
    get: (await failure(sdk.sandboxes.get(other))).message,
    resume: (await failure(sdk.sandboxes.resume(other))).message,
    hibernate: (await failure(sdk.sandboxes.hibernate(other))).message,
    delete: (await failure(sdk.sandboxes.delete(other))).message,
  };
}

try {
  await main();
  console.log(JSON.stringify({ ok: true, steps }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error), steps }));
  process.exitCode = 1;
}
