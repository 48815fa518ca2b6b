// A tiny typed event emitter: core may not import Node's EventEmitter, and the browser build
// needs the same thing. Listener errors are caught so a bad listener cannot break the stack.

export type Listener<T> = (event: T) => void;

export class TypedEvents<Events extends { [K in keyof Events]: unknown }> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  on<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(name, listener);
  }

  off<K extends keyof Events>(name: K, listener: Listener<Events[K]>): void {
    this.listeners.get(name)?.delete(listener as Listener<never>);
  }

  emit<K extends keyof Events>(name: K, event: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const l of set) {
      try {
        (l as Listener<Events[K]>)(event);
      } catch {
        // A listener's failure is its own; the stack carries on.
      }
    }
  }
}
