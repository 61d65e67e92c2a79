// Type-checked by `tsc --noEmit -p tests/node` in `make test`: the answer of
// `POST /v1/sandboxes/{id}/sessions`, recorded from a test run against the simulator
// (tests/sessions/test_sdk_type.py checks live answers against it and re-records it with
// CORRAL_RECORD_SDK_SESSION=1), must be the pinned SDK's `SandboxSession`. A fresh object
// literal is checked for excess properties too, so an extra field fails as well as a missing
// or mistyped one.
import type { SandboxSession } from "@codesandbox/sdk";
import type { connectToSandbox } from "@codesandbox/sdk/browser";

// BEGIN RECORDED
const recorded: SandboxSession = {
  "sandboxId": "7gcfv5",
  "sessionId": "ukvff2dnqllw4m74y4iu",
  "isPint": false,
  "bootupType": "RUNNING",
  "cluster": "sim-eu-1",
  "pitcherURL": "wss://7gcfv5.sim-eu-1.pitcher.simulator.invalid",
  "pitcherToken": "dSNoD5i6ANmtFFmmbx0UZwOfMJSwyxq6YUKQLlD3go8",
  "userWorkspacePath": "/project/workspace",
  "workspacePath": "/project/sandbox",
  "pitcherVersion": "0.310.2",
  "latestPitcherVersion": "1.350.3",
  "pitcherManagerVersion": "1.47.0"
};
// END RECORDED

// What the browser SDK's connectToSandbox({session, getSession}) takes.
type BrowserOptions = Parameters<typeof connectToSandbox>[0];
const session: BrowserOptions["session"] = recorded;
const getSession: BrowserOptions["getSession"] = async () => recorded;

export { getSession, session };
