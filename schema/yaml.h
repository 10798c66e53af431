// A light, read-only YAML node tree for the lab file reader (internal to schema/).
//
// Built from libyaml's event parser in one pass: every node is a slot in one array (scalars keep
// their text, collections a range of child slots), with the position it starts at. Positions are
// reported as yaml-cpp did before this reader replaced it (0-based line, byte column, lines
// counted at '\n'), so every diagnostic keeps its FILE:LINE:COL. Scalars are text: plain `~`,
// `null`, `Null`, `NULL` and empty values are null nodes; tags are not interpreted. An alias is
// the anchored node itself (the same slot: no copy, so alias bombs cost nothing).
//
// Merge keys (YAML 1.1's `<<: *anchor`, `<<: [*a, *b]`) are applied as the map closes: the map
// gets the pairs of the merged maps whose keys it does not write itself (an earlier map in the
// list wins over a later one), in place of the `<<` pair. The merged pairs are the anchored
// nodes themselves, so their positions are where they are written. A merge of anything but maps
// is reported in LoadResult::merge_errors and left out; the rest of the document is built.
//
// Load() also enforces the limits the reader promises before anything is decoded: collections
// nested deeper than `max_depth` stop the pass at the first one past the limit. Only the first
// document is built; the rest are counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lab::schema::yaml {

/// 0-based line and byte column; line < 0 when unknown.
struct Mark {
  int line = -1;
  int column = -1;
  bool is_null() const { return line < 0; }
};

enum class NodeType { kUndefined, kNull, kScalar, kSequence, kMap };

class Document;

/// A handle to a node of a Document (which must outlive it); default-constructed = undefined,
/// as is an index past the end or a key that is not there.
class Node {
 public:
  Node() = default;
  NodeType Type() const;
  bool IsDefined() const { return doc_ != nullptr; }
  bool IsNull() const { return Type() == NodeType::kNull; }
  bool IsScalar() const { return Type() == NodeType::kScalar; }
  bool IsSequence() const { return Type() == NodeType::kSequence; }
  bool IsMap() const { return Type() == NodeType::kMap; }
  /// The text of a scalar; "" for anything else.
  const std::string& Scalar() const;
  Mark GetMark() const;
  /// Items of a sequence, pairs of a map, 0 otherwise.
  size_t size() const;
  /// Item `i` of a sequence.
  Node operator[](size_t i) const;
  /// The value of the first pair of a map whose key is the scalar `key`.
  Node operator[](std::string_view key) const;
  /// Key and value of pair `i` of a map.
  Node Key(size_t i) const;
  Node Value(size_t i) const;

 private:
  friend class Document;
  Node(const Document* doc, uint32_t index) : doc_(doc), index_(index) {}
  Node Child(size_t i) const;
  const Document* doc_ = nullptr;
  uint32_t index_ = 0;
};

class Document {
 public:
  /// The root of the first document; null for an empty text.
  Node Root() const;

 private:
  friend class Node;
  friend class Builder;
  struct Slot {
    NodeType type = NodeType::kNull;
    Mark mark;
    uint32_t first = 0;  // collections: first child in kids_
    uint32_t count = 0;  // collections: number of children (2 per pair of a map)
    bool merge_key = false;  // a plain scalar `<<`
    std::string scalar;
  };
  std::vector<Slot> slots_;
  std::vector<uint32_t> kids_;
  bool has_root_ = false;
  uint32_t root_ = 0;
};

struct SyntaxError {
  Mark mark;
  std::string message;  // without the "YAML syntax: " prefix
};

struct LoadResult {
  std::unique_ptr<Document> doc;  // always set; Root() is meaningful only without error/too_deep
  int documents = 0;              // documents in the text (counted up to a syntax error in a later one)
  Mark second_document;           // where the second document's first node starts
  std::optional<Mark> too_deep;   // the first collection nested past max_depth
  std::optional<SyntaxError> error;  // a syntax error in the first document (or before the depth limit)
  std::vector<SyntaxError> merge_errors;  // `<<` pairs that could not be merged (left out), in text order
};

/// Parses `text` (never throws).
LoadResult Load(std::string_view text, int max_depth);

}  // namespace lab::schema::yaml
