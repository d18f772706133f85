"""The delivery gateway: prompts from the `upgrade-prompts` topic to signed-in browsers (Server-Sent
Events with resume), and their feedback (shown / clicked / dismissed) back to `prompt-feedback`."""
