// Types of the upsell-triggers browser client (dist/upsell.mjs; dist/upsell.js sets window.UpsellPrompts).

/** A prompt as the gateway delivers it (schemas/gateway-stream.schema.json: the worker's prompt minus account_id). */
export interface Prompt {
  schema_version: number;
  prompt_id: string;
  user_id: string | null;
  rule_id: string;
  signal: string;
  metric: string;
  feature: string | null;
  value: number;
  limit: number | null;
  ratio: number | null;
  plan: string;
  target_plan: string;
  placement: "banner" | "modal" | "toast" | "inline" | null;
  priority: number;
  title: string;
  body: string;
  cta: { label: string; url: string };
  trigger_event_id: string;
  created_at: string;
  expires_at: string;
}

export type Action = "shown" | "clicked" | "dismissed";

/** What a renderer calls back: the default renderer calls clicked() on the CTA and dismissed() on close. */
export interface PromptApi {
  shown(): void;
  clicked(): void;
  dismissed(): void;
}

/** What a renderer returns: the element (watched until half visible, then "shown" is reported) and how to take it down. */
export interface RenderedPrompt {
  element?: Element;
  remove?(): void;
}

export type Renderer = (prompt: Prompt, api: PromptApi, options: ClientOptions) => RenderedPrompt | void;

export interface ClientOptions {
  /** Gateway base URL, e.g. "https://prompts.example.com". */
  url: string;
  /** The user token your backend signed, or a function returning a fresh one (called on every connect). */
  token: string | (() => string | Promise<string>);
  /** The account the page has signed in: a token for another account is then refused (403). */
  account?: string;
  /** Replaces the default banner / modal / toast / inline renderer. */
  render?: Renderer;
  /** Where "inline" prompts go (default: the first [data-upsell-slot] element; else shown as a banner). */
  container?: Element;
  document?: Document;
  onPrompt?(prompt: Prompt): void;
  onOpen?(): void;
  /** After each feedback report: the gateway's HTTP status (202 accepted, 200 duplicate, ...). */
  onFeedback?(promptId: string, action: Action, status: number): void;
  onError?(error: Error & { status?: number }): void;
  /** Reconnect when nothing (not even a heartbeat) arrived for this long. Default 45000. */
  heartbeatTimeoutMs?: number;
  /** Reconnect backoff: jittered, doubling from min to max. Defaults 500 and 30000. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  fetch?: typeof fetch;
}

export interface Client {
  /** Closes the stream and takes down every rendered prompt. */
  close(): void;
  /** The prompts rendered now. */
  prompts(): Prompt[];
  /** Reports feedback yourself (a custom renderer's own buttons); once per prompt and action. */
  report(promptId: string, action: Action): Promise<void>;
  readonly lastEventId: string | null;
}

export function connect(options: ClientOptions): Client;
export function renderDefault(prompt: Prompt, api: PromptApi, options: ClientOptions): RenderedPrompt;
export function sseParser(onEvent: (event: { id: string | null; event: string; data: string }) => void): (chunk: string) => void;

declare global {
  interface Window {
    UpsellPrompts: { connect: typeof connect; renderDefault: typeof renderDefault; sseParser: typeof sseParser };
  }
}
