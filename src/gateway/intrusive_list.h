// Doubly linked lists threaded through their nodes (`prev`, `next`
// members): the gateway's per-loop lists of connections, whose nodes live
// in coroutine frames and parked records, so linking allocates nothing.
// Loop thread only.
#pragma once

namespace capstan::gateway {

template <typename Node>
void LinkFront(Node** head, Node* node) {
  node->prev = nullptr;
  node->next = *head;
  if (*head != nullptr) (*head)->prev = node;
  *head = node;
}

template <typename Node>
void Unlink(Node** head, Node* node) {
  if (node->prev != nullptr) {
    node->prev->next = node->next;
  } else {
    *head = node->next;
  }
  if (node->next != nullptr) node->next->prev = node->prev;
  node->prev = node->next = nullptr;
}

}  // namespace capstan::gateway
