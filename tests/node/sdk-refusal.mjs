// A quota refusal as the official SDK reports it: CSB_API_KEY is a key of a team that may run
// one VM at a time, so the second create's start is refused by Corral's admission.
//
// Prints one JSON summary line and exits non-zero when any step fails.
import { CodeSandbox } from "@codesandbox/sdk";

const steps = {};
const sdk = new CodeSandbox();

async function main() {
  const first = await sdk.sandboxes.create({ title: "first" });
  steps.first = { id: first.id, bootupType: first.bootupType };
  try {
    await sdk.sandboxes.create({ title: "second" });
    throw new Error("the second create was admitted");
  } catch (error) {
    steps.refused = {
      name: error.constructor?.name ?? null,
      type: error.type ?? null,
      message: String(error.message ?? error),
    };
  }
  if (steps.refused.type !== "rate-limit") {
    throw new Error(`expected the SDK's rate-limit error, got ${JSON.stringify(steps.refused)}`);
  }
  // Room again once the first one hibernates: the refused sandbox can now be resumed.
  await sdk.sandboxes.hibernate(first.id);
  const listed = await sdk.sandboxes.list();
  const second = listed.sandboxes.find((s) => s.title === "second");
  const resumed = await sdk.sandboxes.resume(second.id);
  steps.afterHibernate = { id: second.id, bootupType: resumed.bootupType };
}

try {
  await main();
  console.log(JSON.stringify({ ok: true, steps }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error?.stack ?? error), steps }));
  process.exitCode = 1;
}
