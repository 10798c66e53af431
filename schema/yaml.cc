// The light YAML tree (see yaml.h), built from libyaml's event API.
#include "schema/yaml.h"

#include <yaml.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <unordered_map>

namespace lab::schema::yaml {

namespace {

const std::string kEmpty;

/// yaml-cpp's null scalars (a plain scalar without a tag).
bool IsNullText(std::string_view s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }

/// libyaml counts columns in characters and lines at every line break ("\r\n", '\r', NEL, LS, PS)
/// but its mark.index is the character index; yaml-cpp counted bytes and broke lines at '\n'
/// only. Positions go through the character index to keep yaml-cpp's numbers exactly.
class Positions {
 public:
  explicit Positions(std::string_view text) : text_(text) {
    bom_ = text.size() >= 3 && std::memcmp(text.data(), "\xEF\xBB\xBF", 3) == 0;
    ascii_ = std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
    line_starts_.push_back(0);
    for (size_t i = 0; i < text.size(); ++i)
      if (text[i] == '\n') line_starts_.push_back(i + 1);
  }

  Mark Of(const yaml_mark_t& m) { return OfByte(ByteOf(m.index)); }

  /// Byte offset -> yaml-cpp position.
  Mark OfByte(size_t byte) const {
    // Events come in text order: the line of the last position, or the next, is nearly always it.
    size_t line = hint_;
    auto on = [&](size_t l) {
      return l < line_starts_.size() && line_starts_[l] <= byte && (l + 1 == line_starts_.size() || byte < line_starts_[l + 1]);
    };
    if (!on(line)) {
      if (on(line + 1)) {
        ++line;
      } else {
        auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), byte);
        line = static_cast<size_t>(it - line_starts_.begin()) - 1;
      }
    }
    hint_ = line;
    size_t col = byte - line_starts_[line];
    if (line == 0 && bom_) col = col >= 3 ? col - 3 : 0;  // yaml-cpp skipped the byte order mark
    return Mark{static_cast<int>(line), static_cast<int>(col)};
  }

 private:
  /// Character index (libyaml's, which does not count a byte order mark) -> byte offset.
  size_t ByteOf(size_t index) {
    if (ascii_) return std::min(index, text_.size());
    if (char_bytes_.empty()) {
      // libyaml decodes the text before it parses, so an index always lands on a character it read.
      size_t i = bom_ ? 3 : 0;
      while (i < text_.size()) {
        char_bytes_.push_back(static_cast<uint32_t>(i));
        unsigned char c = static_cast<unsigned char>(text_[i]);
        i += c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
      }
    }
    return index < char_bytes_.size() ? char_bytes_[index] : text_.size();
  }

  std::string_view text_;
  bool bom_ = false;
  bool ascii_ = true;
  std::vector<size_t> line_starts_;
  std::vector<uint32_t> char_bytes_;
  mutable size_t hint_ = 0;  // the line found last
};

/// libyaml's wording -> the words the reader used with yaml-cpp where both stop at the same
/// place for the same reason (what the character there is tells which), so that diagnostics stay
/// as they were; libyaml's own words otherwise, or clearer ones where they are obscure.
std::string Message(const yaml_parser_t& p, std::string_view text, size_t byte) {
  std::string problem = p.problem ? p.problem : "unknown error";
  if (p.error == YAML_READER_ERROR) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned>(p.problem_value & 0xFF));
    if (problem == "control characters are not allowed")
      return "control character " + std::string(hex) + " is not allowed in a lab file; remove it";
    return "byte " + std::string(hex) + " is not UTF-8 text (" + problem + "); save the lab file as UTF-8";
  }
  char at = byte < text.size() ? text[byte] : '\0';
  bool flow_end = at == ']' || at == '}';
  std::string context = p.context ? p.context : "";
  if (problem == "did not find expected key") return flow_end ? "illegal flow end" : "end of map not found";
  if (problem == "did not find expected ',' or '}'" || problem == "did not find expected ',' or ']'") {
    if (flow_end) return "illegal flow end";
    if (at == '-') return "illegal block entry";
    return problem.back() == ']' ? "end of sequence flow not found" : "end of map flow not found";
  }
  if (problem == "did not find expected '-' indicator") return "end of sequence not found";
  if (problem == "did not find expected node content") {
    if (flow_end) return "illegal flow end";
    if (at == '-') return "illegal block entry";
    if (at == ',') return "',' cannot start a value; quote the value or remove it";
  }
  if (problem == "did not find expected comment or line break" && context.find("block scalar") != std::string::npos)
    return "unexpected character in block scalar";
  if (problem == "found unexpected end of stream" && context.find("quoted scalar") != std::string::npos)
    return "illegal EOF in scalar";
  if (problem == "mapping values are not allowed in this context") return "illegal map value";
  if (problem == "block sequence entries are not allowed in this context") return "illegal block entry";
  if (problem == "found character that cannot start any token") return "unknown token";
  if (problem == "found unknown escape character") return "unknown escape character: " + std::string(1, at);
  if (problem == "did not find expected <document start>")
    return "this does not continue the value above it (check its indentation), and a new document would start "
           "with ---";
  return problem;
}

}  // namespace

class Builder {
  using Slot = Document::Slot;
  /// A collection being read: its slot, and where its children start in kids_.
  struct Open {
    uint32_t index;
    size_t kids_from;
  };

 public:
  Builder(std::string_view text, int max_depth, LoadResult& out)
      : text_(text), pos_(text), max_depth_(max_depth), out_(out), doc_(*out.doc) {
    // A generous estimate, so that the arrays are never moved as they grow: a block-style lab
    // file has about one node per 12 bytes, a flow-style one (bench/gen_lab.py) one per 6.
    // Pages of the reservation that are not used are never touched.
    doc_.slots_.reserve(text.size() / 5 + 16);
    doc_.kids_.reserve(text.size() / 5 + 16);
    doc_.slots_.emplace_back();  // slot 0: the null root of an empty text
  }

  void Run() {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
      out_.error = SyntaxError{Mark{0, 0}, "out of memory"};
      return;
    }
    yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text_.data()), text_.size());
    yaml_event_t event;
    bool done = false;
    while (!done) {
      if (!yaml_parser_parse(&parser, &event)) {
        Fail(parser);
        break;
      }
      done = Handle(event);
      yaml_event_delete(&event);
    }
    yaml_parser_delete(&parser);
  }

 private:
  /// True when the pass is over.
  bool Handle(const yaml_event_t& e) {
    switch (e.type) {
      case YAML_STREAM_END_EVENT: return true;
      case YAML_DOCUMENT_START_EVENT:
        ++out_.documents;
        // Where the second document starts, until its first node says better: a syntax error
        // inside it (which ends the pass before any node) must not leave the count unplaced.
        if (out_.documents == 2) out_.second_document = pos_.Of(e.start_mark);
        first_node_ = true;
        depth_ = 0;
        return false;
      case YAML_DOCUMENT_END_EVENT: return false;
      case YAML_ALIAS_EVENT: {
        Mark mark = Start(e);
        if (!building()) return false;
        auto it = anchors_.find(reinterpret_cast<const char*>(e.data.alias.anchor));
        if (it == anchors_.end()) {
          out_.error = SyntaxError{mark, "the referenced anchor is not defined"};
          return true;
        }
        Attach(it->second);
        return false;
      }
      case YAML_SCALAR_EVENT: {
        Mark mark = Start(e);
        if (!building()) return false;
        std::string_view value(reinterpret_cast<const char*>(e.data.scalar.value), e.data.scalar.length);
        bool null = e.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && e.data.scalar.tag == nullptr && IsNullText(value);
        uint32_t index = Add(null ? NodeType::kNull : NodeType::kScalar, mark, e.data.scalar.anchor);
        if (!null) doc_.slots_[index].scalar.assign(value);
        if (e.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && value == "<<") doc_.slots_[index].merge_key = true;
        Attach(index);
        return false;
      }
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        Mark mark = Start(e);
        if (++depth_ > max_depth_) {
          out_.too_deep = mark;
          return true;
        }
        if (!building()) return false;
        bool map = e.type == YAML_MAPPING_START_EVENT;
        uint32_t index = Add(map ? NodeType::kMap : NodeType::kSequence, mark,
                             map ? e.data.mapping_start.anchor : e.data.sequence_start.anchor);
        Attach(index);
        open_.push_back(Open{index, kids_.size()});
        return false;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT: {
        --depth_;
        if (!building()) return false;
        Open o = open_.back();
        if (e.type == YAML_MAPPING_END_EVENT) Merge(o);
        open_.pop_back();
        auto& slot = doc_.slots_[o.index];
        slot.first = static_cast<uint32_t>(doc_.kids_.size());
        slot.count = static_cast<uint32_t>(kids_.size() - o.kids_from);
        doc_.kids_.insert(doc_.kids_.end(), kids_.begin() + static_cast<std::ptrdiff_t>(o.kids_from), kids_.end());
        kids_.resize(o.kids_from);
        return false;
      }
      default: return false;
    }
  }

  /// Applies the merge keys of the map `o` that is closing (its pairs are the end of kids_).
  void Merge(const Open& o) {
    bool any = false;
    for (size_t i = o.kids_from; i + 1 < kids_.size(); i += 2) any = any || doc_.slots_[kids_[i]].merge_key;
    if (!any) return;
    std::vector<uint32_t> pairs(kids_.begin() + static_cast<std::ptrdiff_t>(o.kids_from), kids_.end());
    kids_.resize(o.kids_from);
    // The map's own keys win over merged ones wherever they are written.
    std::unordered_map<std::string, bool> taken;
    for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
      const Slot& k = doc_.slots_[pairs[i]];
      if (!k.merge_key && k.type == NodeType::kScalar) taken[k.scalar] = true;
    }
    for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
      const Slot& key = doc_.slots_[pairs[i]];
      if (!key.merge_key) {
        kids_.push_back(pairs[i]);
        kids_.push_back(pairs[i + 1]);
        continue;
      }
      uint32_t value = pairs[i + 1];
      std::vector<uint32_t> sources;
      if (doc_.slots_[value].type == NodeType::kSequence) {
        const Slot& seq = doc_.slots_[value];
        for (uint32_t j = 0; j < seq.count; ++j) sources.push_back(doc_.kids_[seq.first + j]);
      } else {
        sources.push_back(value);
      }
      for (uint32_t src : sources) {
        const Slot& from = doc_.slots_[src];
        if (from.type != NodeType::kMap) {
          out_.merge_errors.push_back(
              SyntaxError{key.mark, "the merge key '<<' takes a map: an alias of one (<<: *defaults) or a list of "
                                    "them (<<: [*a, *b]); this one gets " +
                                        std::string(from.type == NodeType::kSequence ? "a list of lists"
                                                    : from.type == NodeType::kScalar ? "a scalar"
                                                                                     : "nothing") +
                                        "; anchor a map (&defaults {...}) and merge that"});
          continue;
        }
        bool open = std::any_of(open_.begin(), open_.end(), [&](const Open& x) { return x.index == src; });
        if (open) {
          out_.merge_errors.push_back(SyntaxError{
              key.mark, "the merge key '<<' merges a map that contains it (an alias of an enclosing map); merge a "
                        "map anchored outside this one"});
          continue;
        }
        for (uint32_t j = 0; j + 1 < from.count; j += 2) {
          uint32_t k = doc_.kids_[from.first + j];
          const Slot& ks = doc_.slots_[k];
          if (ks.type == NodeType::kScalar && !taken.emplace(ks.scalar, true).second) continue;
          kids_.push_back(k);
          kids_.push_back(doc_.kids_[from.first + j + 1]);
        }
      }
    }
  }

  /// Only the first document is built; later ones are walked for their count and depth.
  bool building() const { return out_.documents == 1; }

  Mark Start(const yaml_event_t& e) {
    Mark mark = pos_.Of(e.start_mark);
    if (first_node_ && out_.documents == 2) out_.second_document = mark;
    first_node_ = false;
    return mark;
  }

  uint32_t Add(NodeType type, Mark mark, const yaml_char_t* anchor) {
    auto index = static_cast<uint32_t>(doc_.slots_.size());
    auto& slot = doc_.slots_.emplace_back();
    slot.type = type;
    slot.mark = mark;
    if (anchor) anchors_[reinterpret_cast<const char*>(anchor)] = index;
    return index;
  }

  void Attach(uint32_t index) {
    if (open_.empty()) {
      doc_.has_root_ = true;
      doc_.root_ = index;
    } else {
      kids_.push_back(index);
    }
  }

  void Fail(const yaml_parser_t& p) {
    if (out_.documents > 1) return;  // an error past the first document: the count is what matters
    size_t byte;
    Mark mark;
    if (p.error == YAML_READER_ERROR) {
      byte = p.problem_offset;
      mark = pos_.OfByte(byte);
    } else {
      mark = pos_.Of(p.problem_mark);
      byte = ByteAt(mark);
    }
    out_.error = SyntaxError{mark, Message(p, text_, byte)};
  }

  size_t ByteAt(Mark m) const {
    size_t line = 0, i = 0;
    while (i < text_.size() && line < static_cast<size_t>(m.line)) line += text_[i++] == '\n';
    if (line == 0 && text_.size() >= 3 && std::memcmp(text_.data(), "\xEF\xBB\xBF", 3) == 0) i += 3;
    return i + static_cast<size_t>(m.column);
  }

  std::string_view text_;
  Positions pos_;
  int max_depth_;
  LoadResult& out_;
  Document& doc_;
  int depth_ = 0;
  bool first_node_ = false;
  std::vector<Open> open_;
  std::vector<uint32_t> kids_;  // children of the open collections, innermost last
  std::unordered_map<std::string, uint32_t> anchors_;
};

NodeType Node::Type() const { return doc_ ? doc_->slots_[index_].type : NodeType::kUndefined; }

const std::string& Node::Scalar() const { return doc_ ? doc_->slots_[index_].scalar : kEmpty; }

Mark Node::GetMark() const { return doc_ ? doc_->slots_[index_].mark : Mark{}; }

size_t Node::size() const {
  if (!doc_) return 0;
  const auto& s = doc_->slots_[index_];
  if (s.type == NodeType::kMap) return s.count / 2;
  return s.type == NodeType::kSequence ? s.count : 0;
}

Node Node::Child(size_t i) const {
  const auto& s = doc_->slots_[index_];
  return Node(doc_, doc_->kids_[s.first + i]);
}

Node Node::operator[](size_t i) const { return IsSequence() && i < size() ? Child(i) : Node(); }

Node Node::operator[](std::string_view key) const {
  if (!IsMap()) return Node();
  for (size_t i = 0; i < size(); ++i) {
    Node k = Key(i);
    if (k.IsScalar() && k.Scalar() == key) return Value(i);
  }
  return Node();
}

Node Node::Key(size_t i) const { return IsMap() && i < size() ? Child(2 * i) : Node(); }
Node Node::Value(size_t i) const { return IsMap() && i < size() ? Child(2 * i + 1) : Node(); }

Node Document::Root() const { return Node(this, has_root_ ? root_ : 0); }

LoadResult Load(std::string_view text, int max_depth) {
  LoadResult out;
  out.doc = std::make_unique<Document>();
  Builder(text, max_depth, out).Run();
  return out;
}

}  // namespace lab::schema::yaml
