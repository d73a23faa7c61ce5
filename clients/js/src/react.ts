/**
 * `useSocket()`: the shared socket for React components. Connects when
 * the first component using it mounts and disconnects when the last one
 * unmounts (the old app's hook connected on mount and disconnected on
 * unmount; counting users keeps one component's unmount from cutting
 * the others off).
 */
import { useEffect } from "react";
import { getSocket } from "./index.js";
import type { ConfabSocket } from "./index.js";

let users = 0;

/** The shared socket ({@link getSocket}), connected while mounted. */
export function useSocket(): ConfabSocket {
  const socket = getSocket();
  useEffect(() => {
    users += 1;
    if (users === 1) {
      socket.connect();
    }
    return () => {
      users -= 1;
      if (users === 0) {
        socket.disconnect();
      }
    };
  }, [socket]);
  return socket;
}
