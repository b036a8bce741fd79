// @volli/client: a typed client of a Volli node's API.
export { createVolliClient, ok, VolliError } from "./client.js";
export type { components, paths, Schemas, TokenSource, VolliClient, VolliClientOptions } from "./client.js";
export { EventStream } from "./events.js";
export type { Event, EventOf, EventStreamOptions, EventType, StreamStatus, WebSocketConstructor } from "./events.js";
export { logIn, parseLoginLink } from "./login.js";
export type { LoggedIn, LoginLink } from "./login.js";
export { avatar, sendFile, setAvatar } from "./files.js";
export type { FileToSend, Target } from "./files.js";
