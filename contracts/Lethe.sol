// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title Lethe: the public record of a federation that can provably forget
/// @notice Node registry and share keys, rounds approved by a node quorum (the federation's
///         consensus on each global model), forget requests and their unlearning certificates.
/// @dev The audit replays events, so history (CIDs, hashes, who approved) lives in events and
///      storage keeps only what access control and state transitions read. No function loops
///      over an unbounded set; the roster views loop, but views cost no gas.
contract Lethe {
    enum ForgetState {
        None,
        Requested,
        Certified,
        Completed
    }

    /// @dev Two slots. `quorum` is fixed when the round is proposed (so admitting or removing
    ///      nodes later cannot move the goalposts) and is never 0 for a proposed round.
    ///      `admissions` is the admission counter at proposal: only nodes admitted by then may
    ///      approve. `proposal` binds the approvals to the proposed content:
    ///      keccak256(abi.encode(globalModelHash, updatesRoot)).
    struct Round {
        uint32 quorum;
        uint32 approvals;
        bool finalized;
        uint64 admissions;
        bytes32 proposal;
    }

    /// @dev One slot: an admitted node's place in `_roster` (plus one; 0 = not admitted) and
    ///      its admission serial (a node removed and admitted again gets a new one).
    struct Member {
        uint128 positionPlusOne;
        uint64 serial;
    }

    /// @dev One slot. `node` is the record's owner, named by the request; only it certifies.
    ///      `afterRound` is the last proposed round when the node certified: only a later
    ///      round can contain the node's retrained model.
    struct Forget {
        ForgetState state;
        address node;
        uint64 afterRound;
    }

    address public immutable owner;
    uint256 public immutable deployedBlock;

    // Slot 0, read together by every coordinator call: 20 + 8 + 4 bytes.
    address public coordinator;
    uint64 public lastRound;
    /// @notice Quorum set by the owner; 0 means the default ceil(2n/3) of admitted nodes.
    uint32 public configuredQuorum;
    /// @notice Nodes admitted so far (ever): the serial of the latest admission.
    uint64 public admissions;

    address[] private _roster;
    mapping(address node => Member) private _members;
    mapping(address node => bytes32 x25519PublicKey) public nodeKey;
    mapping(uint64 round => Round) private _rounds;
    mapping(uint64 round => mapping(address node => bool)) public hasApproved;
    mapping(bytes32 requestId => Forget) private _forgets;

    event CoordinatorAdmitted(address indexed coordinator, address indexed previous);
    event NodeAdmitted(address indexed node, uint256 nodeCount);
    event NodeRemoved(address indexed node, uint256 nodeCount);
    event KeyRegistered(address indexed node, bytes32 key);
    event QuorumSet(uint32 configuredQuorum);
    event RoundProposed(
        uint64 indexed round,
        address indexed proposer,
        bytes32 globalModelHash,
        string globalModelCid,
        bytes32 updatesRoot,
        string manifestCid,
        uint32 quorum,
        uint256 nodeCount
    );
    event RoundApproved(uint64 indexed round, address indexed node, uint32 approvals);
    event RoundFinalized(uint64 indexed round, uint32 approvals, uint32 quorum);
    event ForgetRequested(
        bytes32 indexed requestId, bytes32 recordCommitment, address indexed coordinator, address indexed node
    );
    event ForgetCertified(
        bytes32 indexed requestId,
        address indexed node,
        string certificateCid,
        bytes32 newModelHash,
        uint64 afterRound
    );
    event ForgetCompleted(bytes32 indexed requestId, uint64 indexed round, address indexed node);

    error NotOwner(address caller);
    error NotCoordinator(address caller);
    error NotAdmittedNode(address caller);
    error ZeroAddress();
    error AlreadyAdmitted(address node);
    error RoleConflict(address account);
    error InvalidKey();
    error RoundNotNext(uint64 round, uint64 expected);
    error QuorumUnreachable(uint256 quorum, uint256 nodeCount);
    error UnknownRound(uint64 round);
    error AlreadyApproved(uint64 round, address node);
    error ProposalMismatch(uint64 round);
    error AdmittedAfterProposal(uint64 round, address node);
    error RequestExists(bytes32 requestId);
    error UnknownRequest(bytes32 requestId);
    error AlreadyCertified(bytes32 requestId, address node);
    error NotRecordOwner(bytes32 requestId, address caller);
    error NotCertified(bytes32 requestId);
    error AlreadyCompleted(bytes32 requestId);
    error RoundNotFinalized(uint64 round);
    error RoundBeforeCertificate(uint64 round, uint64 afterRound);

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlyCoordinator() {
        if (msg.sender != coordinator) revert NotCoordinator(msg.sender);
        _;
    }

    modifier onlyNode() {
        if (_members[msg.sender].positionPlusOne == 0) revert NotAdmittedNode(msg.sender);
        _;
    }

    /// @param coordinator_ First coordinator, or the zero address to admit one later.
    /// @param quorum_ Approvals a round needs; 0 for the default ceil(2n/3).
    constructor(address coordinator_, uint32 quorum_) {
        owner = msg.sender;
        deployedBlock = block.number;
        configuredQuorum = quorum_;
        emit QuorumSet(quorum_);
        if (coordinator_ != address(0)) {
            coordinator = coordinator_;
            emit CoordinatorAdmitted(coordinator_, address(0));
        }
    }

    // ----- roles -------------------------------------------------------------------------

    /// @notice Make `account` the coordinator (replacing the previous one).
    function admitCoordinator(address account) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        // One address, one role: otherwise the coordinator could certify its own requests.
        if (_members[account].positionPlusOne != 0) revert RoleConflict(account);
        address previous = coordinator;
        coordinator = account;
        emit CoordinatorAdmitted(account, previous);
    }

    /// @notice Admit `node` to the federation.
    function admitNode(address node) external onlyOwner {
        if (node == address(0)) revert ZeroAddress();
        if (node == coordinator) revert RoleConflict(node);
        if (_members[node].positionPlusOne != 0) revert AlreadyAdmitted(node);
        _roster.push(node);
        uint256 count = _roster.length;
        uint64 serial = admissions + 1;
        admissions = serial;
        _members[node] = Member({positionPlusOne: uint128(count), serial: serial});
        emit NodeAdmitted(node, count);
    }

    /// @notice Remove `node`; its past approvals and certificates stay on record, and it can
    ///         approve no round and certify no request from now on (admitted again, it counts
    ///         only for rounds proposed after that).
    function removeNode(address node) external onlyOwner {
        uint256 position = _members[node].positionPlusOne;
        if (position == 0) revert NotAdmittedNode(node);
        uint256 last = _roster.length;
        if (position != last) {
            address moved = _roster[last - 1];
            _roster[position - 1] = moved;
            _members[moved].positionPlusOne = uint128(position);
        }
        _roster.pop();
        delete _members[node];
        delete nodeKey[node];
        emit NodeRemoved(node, last - 1);
    }

    /// @notice Set the approvals a round needs; 0 restores the default ceil(2n/3).
    /// @dev Takes effect for rounds proposed afterwards.
    function setQuorum(uint32 quorum_) external onlyOwner {
        configuredQuorum = quorum_;
        emit QuorumSet(quorum_);
    }

    /// @notice Publish (or rotate) the caller's X25519 public key for secret shares.
    function registerKey(bytes32 key) external onlyNode {
        if (key == bytes32(0)) revert InvalidKey();
        nodeKey[msg.sender] = key;
        emit KeyRegistered(msg.sender, key);
    }

    // ----- rounds ------------------------------------------------------------------------

    /// @notice Propose round `round`'s global model for the nodes' approval.
    /// @dev Rounds are numbered 1, 2, 3, … with no gaps, so "a round after the certificate" is
    ///      well defined and no proposal can exhaust the round numbers.
    function proposeRound(
        uint64 round,
        bytes32 globalModelHash,
        string calldata globalModelCid,
        bytes32 updatesRoot,
        string calldata manifestCid
    ) external onlyCoordinator {
        uint64 expected = lastRound + 1;
        if (round != expected) revert RoundNotNext(round, expected);
        uint256 count = _roster.length;
        uint256 required = _quorumFor(count);
        if (required == 0 || required > count) revert QuorumUnreachable(required, count);
        lastRound = round;
        _rounds[round] = Round({
            quorum: uint32(required),
            approvals: 0,
            finalized: false,
            admissions: admissions,
            proposal: keccak256(abi.encode(globalModelHash, updatesRoot))
        });
        emit RoundProposed(
            round, msg.sender, globalModelHash, globalModelCid, updatesRoot, manifestCid, uint32(required), count
        );
    }

    /// @notice Approve round `round` after checking the caller's commitment is in its
    ///         updatesRoot and its CID's bytes hash to its globalModelHash; the approval names
    ///         both, and counts only if they are the ones proposed.
    /// @dev Approvals after finalization are still recorded: every attestation is evidence.
    ///      Only nodes admitted when the round was proposed (and still admitted) approve.
    function approveRound(uint64 round, bytes32 globalModelHash, bytes32 updatesRoot) external {
        uint64 serial = _members[msg.sender].serial;
        if (serial == 0) revert NotAdmittedNode(msg.sender);
        Round storage r = _rounds[round];
        uint32 required = r.quorum;
        if (required == 0) revert UnknownRound(round);
        if (serial > r.admissions) revert AdmittedAfterProposal(round, msg.sender);
        if (r.proposal != keccak256(abi.encode(globalModelHash, updatesRoot))) revert ProposalMismatch(round);
        if (hasApproved[round][msg.sender]) revert AlreadyApproved(round, msg.sender);
        hasApproved[round][msg.sender] = true;
        uint32 approvals = r.approvals + 1;
        r.approvals = approvals;
        emit RoundApproved(round, msg.sender, approvals);
        if (approvals == required) {
            r.finalized = true;
            emit RoundFinalized(round, approvals, required);
        }
    }

    // ----- forgetting --------------------------------------------------------------------

    /// @notice Open forget request `requestId` for the record committed to by `recordCommitment`,
    ///         held by admitted node `node` (the node that announced the commitment).
    function requestForget(bytes32 requestId, bytes32 recordCommitment, address node) external onlyCoordinator {
        if (_members[node].positionPlusOne == 0) revert NotAdmittedNode(node);
        Forget storage f = _forgets[requestId];
        if (f.state != ForgetState.None) revert RequestExists(requestId);
        f.state = ForgetState.Requested;
        f.node = node;
        emit ForgetRequested(requestId, recordCommitment, msg.sender, node);
    }

    /// @notice The owning node certifies it deleted the record and retrained.
    /// @dev Only the node the request names, while admitted, can certify (never the
    ///      coordinator, see RoleConflict); its certificate's Merkle proof shows the record
    ///      was in its training data.
    function certifyForget(bytes32 requestId, string calldata certificateCid, bytes32 newModelHash)
        external
        onlyNode
    {
        Forget storage f = _forgets[requestId];
        ForgetState state = f.state;
        if (state == ForgetState.None) revert UnknownRequest(requestId);
        if (state != ForgetState.Requested) revert AlreadyCertified(requestId, f.node);
        if (f.node != msg.sender) revert NotRecordOwner(requestId, msg.sender);
        uint64 afterRound = lastRound;
        f.state = ForgetState.Certified;
        f.afterRound = afterRound;
        emit ForgetCertified(requestId, msg.sender, certificateCid, newModelHash, afterRound);
    }

    /// @notice Close request `requestId`: finalized round `round` carries the retrained model.
    function completeForget(bytes32 requestId, uint64 round) external onlyCoordinator {
        Forget storage f = _forgets[requestId];
        ForgetState state = f.state;
        if (state == ForgetState.None) revert UnknownRequest(requestId);
        if (state == ForgetState.Requested) revert NotCertified(requestId);
        if (state == ForgetState.Completed) revert AlreadyCompleted(requestId);
        if (!_rounds[round].finalized) revert RoundNotFinalized(round);
        uint64 afterRound = f.afterRound;
        if (round <= afterRound) revert RoundBeforeCertificate(round, afterRound);
        f.state = ForgetState.Completed;
        emit ForgetCompleted(requestId, round, f.node);
    }

    // ----- views -------------------------------------------------------------------------

    /// @notice keccak256(abi.encode(globalModelHash, updatesRoot)) of a proposed round, or 0.
    function roundProposal(uint64 round) external view returns (bytes32) {
        return _rounds[round].proposal;
    }

    /// @notice Approvals a round proposed now would need.
    function quorum() external view returns (uint256) {
        return _quorumFor(_roster.length);
    }

    function nodeCount() external view returns (uint256) {
        return _roster.length;
    }

    function isNode(address account) external view returns (bool) {
        return _members[account].positionPlusOne != 0;
    }

    /// @notice Admitted nodes and their X25519 keys (zero until registered), in roster order.
    function roster() external view returns (address[] memory nodes, bytes32[] memory keys) {
        nodes = _roster;
        keys = new bytes32[](nodes.length);
        for (uint256 i = 0; i < nodes.length; ++i) {
            keys[i] = nodeKey[nodes[i]];
        }
    }

    function roundState(uint64 round) external view returns (uint32 quorum_, uint32 approvals, bool finalized) {
        Round storage r = _rounds[round];
        return (r.quorum, r.approvals, r.finalized);
    }

    function forgetState(bytes32 requestId) external view returns (ForgetState state, address node, uint64 afterRound) {
        Forget storage f = _forgets[requestId];
        return (f.state, f.node, f.afterRound);
    }

    function _quorumFor(uint256 count) private view returns (uint256) {
        uint256 configured = configuredQuorum;
        return configured == 0 ? (2 * count + 2) / 3 : configured;
    }
}
